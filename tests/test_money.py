"""pt-BR money in letters: the fast formatter prints exactly what Babel's pt_BR format does."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

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
    assert money(Decimal("1.5")) == "R$\xa01,50"  # remembered: 1.5 == Decimal("1.5")
    with pytest.raises(TypeError):
        money(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        amount(1.5)  # type: ignore[arg-type]


def test_equal_amounts_print_alike_whatever_their_form() -> None:
    """Remembered texts are shared by equal amounts: each form must print the same."""
    for forms in ((Decimal("-0.00"), Decimal("0"), 0), (Decimal("7"), Decimal("7.000"), 7)):
        printed = {money(form) for form in forms} | {money(form) for form in reversed(forms)}
        assert len(printed) == 1, printed
    for not_a_number in ("NaN", "sNaN", "-Infinity"):
        with pytest.raises(InvalidOperation):
            money(Decimal(not_a_number))
