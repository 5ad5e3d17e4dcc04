"""pt-BR money in letters: the fast formatter prints exactly what Babel's pt_BR format does."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from babel.numbers import format_currency
from hypothesis import given
from hypothesis import strategies as st

from cobranca.render import amount, money

CENTS = Decimal("0.01")


@given(st.decimals(min_value=Decimal("-1e13"), max_value=Decimal("1e13"), places=3))
def test_money_matches_babel_after_rounding_half_up(value: Decimal) -> None:
    rounded = value.quantize(CENTS, ROUND_HALF_UP)
    expected = format_currency(rounded, "BRL", locale="pt_BR")
    if rounded == 0:
        expected = "R$\xa00,00"  # Babel writes "-R$ 0,00" for -0.004; a letter must not
    assert money(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("1234.565"), "R$\xa01.234,57"),  # half-up, where Babel alone gives ,56
        (Decimal("0.005"), "R$\xa00,01"),
        (Decimal("-1234567.8"), "-R$\xa01.234.567,80"),
        (Decimal("-0.004"), "R$\xa00,00"),
        (1000, "R$\xa01.000,00"),
    ],
)
def test_money_examples(value: Decimal | int, shown: str) -> None:
    assert money(value) == shown
    assert amount(value) == shown.replace("R$\xa0", "")


def test_money_refuses_floats() -> None:
    with pytest.raises(TypeError):
        money(1.5)  # type: ignore[arg-type]
