"""CNPJ and CPF check digits (mod 11), including the alphanumeric CNPJ of July 2026.

For the alphanumeric CNPJ the Receita Federal computes the same weights over each character's
ASCII code minus 48, so digits keep their value and letters count from 17 (A) up.
"""

from __future__ import annotations

import re

_CNPJ = re.compile(r"[0-9A-Z]{12}[0-9]{2}")


def _check_digit(values: list[int], weights: list[int]) -> int:
    remainder = sum(v * w for v, w in zip(values, weights, strict=True)) % 11
    return 0 if remainder < 2 else 11 - remainder


def valid_cnpj(text: str) -> bool:
    if not _CNPJ.fullmatch(text) or len(set(text)) == 1:
        return False
    values = [ord(c) - 48 for c in text]
    first = _check_digit(values[:12], [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    second = _check_digit(values[:13], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    return values[12] == first and values[13] == second


def valid_cpf(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{11}", text) or len(set(text)) == 1:
        return False
    values = [int(c) for c in text]
    first = _check_digit(values[:9], list(range(10, 1, -1)))
    second = _check_digit(values[:10], list(range(11, 1, -1)))
    return values[9] == first and values[10] == second
