"""CNPJ and CPF check digits (mod 11), including the alphanumeric CNPJ of July 2026.

For the alphanumeric CNPJ the Receita Federal computes the same weights over each character's
ASCII code minus 48, so digits keep their value and letters count from 17 (A) up.
"""

from __future__ import annotations

import re

_CNPJ = re.compile(r"[0-9A-Z]{12}[0-9]{2}")
_CPF = re.compile(r"[0-9]{11}")


def _mod11_digits(values: list[int], first_weight_cycle: int) -> str:
    """Append two mod-11 check digits; weights run 2.. from the right, cycling after the max."""
    values = list(values)
    for _ in range(2):
        weights = [2 + i % (first_weight_cycle - 1) for i in range(len(values))][::-1]
        remainder = sum(v * w for v, w in zip(values, weights, strict=True)) % 11
        values.append(0 if remainder < 2 else 11 - remainder)
    return f"{values[-2]}{values[-1]}"


def cnpj_check_digits(base12: str) -> str:
    """The two check digits of a CNPJ (weights 2..9 cycling from the right)."""
    return _mod11_digits([ord(c) - 48 for c in base12.upper()], 9)


def cpf_check_digits(base9: str) -> str:
    """The two check digits of a CPF (weights 2..10, then 2..11, from the right)."""
    return _mod11_digits([int(c) for c in base9], 12)


def valid_cnpj(text: str) -> bool:
    return (
        bool(_CNPJ.fullmatch(text))
        and len(set(text)) > 1
        and (cnpj_check_digits(text[:12]) == text[12:])
    )


def valid_cpf(text: str) -> bool:
    return (
        bool(_CPF.fullmatch(text))
        and len(set(text)) > 1
        and (cpf_check_digits(text[:9]) == text[9:])
    )
