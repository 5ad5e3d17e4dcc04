"""Late charges (cobranca.charges): pure functions over Title, checked by hand and by property."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobranca.charges import (
    ChargeRules,
    ChargeTotals,
    InterestFormula,
    InterestSource,
    TitleCharges,
    _percent_interest,
    daily_interest,
    monthly_to_daily,
    title_charges,
    totals,
)
from cobranca.models import Title

MONEY_FIELDS = ("balance", "abatements", "fine", "interest", "additions", "deductions", "total")


def title(
    balance: str | Decimal = "1000.00",
    days_late: int = 17,
    *,
    abatements: str | Decimal = "0.00",
    interest_rate: str | Decimal = "0",
    interest_per_day: str | Decimal = "0.00",
    additions: str | Decimal = "0.00",
    deductions: str | Decimal = "0.00",
) -> Title:
    """The worked example's título by default: due 03/03/2025 (Carnival), real due 05/03/2025."""
    return Title(
        branch="01",
        prefix="NF",
        number="000001",
        installment="",
        type="NF",
        customer_code="000001",
        customer_store="01",
        issue_date=date(2025, 2, 1),
        due_date=date(2025, 3, 3),
        real_due_date=date(2025, 3, 5),
        value=Decimal(balance),
        balance=Decimal(balance),
        abatements=Decimal(abatements),
        situation="0",
        days_from_due=days_late,
        days_late=days_late,
        interest_rate=Decimal(interest_rate),
        interest_per_day=Decimal(interest_per_day),
        additions=Decimal(additions),
        deductions=Decimal(deductions),
    )


def parts_total(charges: TitleCharges) -> Decimal:
    return (
        charges.net_balance
        + charges.fine
        + charges.interest
        + charges.additions
        - charges.deductions
    )


# --- the worked example (shared/protheus.md) --------------------------------------------------

FINE_2 = ChargeRules(fine_percent=Decimal("2"))


def test_worked_example_with_daily_percent_in_the_title() -> None:
    # 20/03/2025 − 03/03/2025 = 17 days (counted from E1_VENCTO, the real due date has passed).
    charges = title_charges(title(interest_rate="0.0333"), "J", FINE_2)
    assert charges.days_late == 17
    assert charges.fine == Decimal("20.00")  # 1000 × 2%
    assert charges.interest == Decimal("5.66")  # 1000 × 17 × 0.000333 = 5.661
    assert charges.total == Decimal("1025.66")
    assert charges.interest_source is InterestSource.TITLE_PERCENT
    assert daily_interest(title(interest_rate="0.0333"), FINE_2).percent == Decimal("0.0333")


def test_worked_example_with_daily_amount_in_the_title() -> None:
    charges = title_charges(title(interest_per_day="0.33"), "J", FINE_2)
    assert charges.fine == Decimal("20.00")
    assert charges.interest == Decimal("5.61")  # 0.33 × 17
    assert charges.total == Decimal("1025.61")
    assert charges.interest_source is InterestSource.TITLE_AMOUNT
    daily = daily_interest(title(interest_per_day="0.33"), FINE_2)
    assert (daily.percent, daily.amount) == (Decimal("0"), Decimal("0.33"))


def test_worked_example_with_the_layout_rate() -> None:
    rules = ChargeRules(fine_percent=Decimal("2"), interest_percent_per_month=Decimal("1"))
    charges = title_charges(title(), "J", rules)
    assert charges.fine == Decimal("20.00")
    assert charges.interest == Decimal("5.66")  # 1%/30 stored as 0.0333, not 1/30 (5.67)
    assert charges.interest_source is InterestSource.LAYOUT
    assert daily_interest(title(), rules).percent == Decimal("0.0333")


def test_the_title_rate_wins_over_the_layout_rate() -> None:
    rules = ChargeRules(interest_percent_per_month=Decimal("30"))  # 1% a day
    assert title_charges(title(interest_rate="0.0333"), "J", rules).interest == Decimal("5.66")
    assert title_charges(title(interest_per_day="0.33"), "J", rules).interest == Decimal("5.61")
    assert title_charges(title(), "J", rules).interest == Decimal("170.00")


def test_no_rate_anywhere_means_no_interest() -> None:
    charges = title_charges(title(), "J", FINE_2)
    assert charges.interest == Decimal("0.00")
    assert charges.interest_source is InterestSource.NONE
    assert daily_interest(title(), FINE_2).percent == 0
    zero_monthly = ChargeRules(interest_percent_per_month=Decimal("0"))
    assert title_charges(title(), "J", zero_monthly).interest == Decimal("0.00")


@pytest.mark.parametrize(
    ("monthly", "daily"),
    [("1", "0.0333"), ("2", "0.0667"), ("0.5", "0.0167"), ("3", "0.1000"), ("0.0015", "0.0001")],
)
def test_monthly_rate_becomes_what_protheus_stores(monthly: str, daily: str) -> None:
    assert monthly_to_daily(Decimal(monthly)) == Decimal(daily)


# --- formulas, by hand ------------------------------------------------------------------------


def rules(formula: InterestFormula) -> ChargeRules:
    return ChargeRules(interest_formula=formula)


@pytest.mark.parametrize(
    ("formula", "days", "expected"),
    [
        # 1% a day on 1000.00. Simple: 1000 × d × 0.01.
        (InterestFormula.SIMPLE, 30, "300.00"),
        (InterestFormula.SIMPLE, 31, "310.00"),
        # Compound: 1000 × (1.01^d − 1); 1.01^30 = 1.3478489153…, 1.01^31 = 1.3613274044…
        (InterestFormula.COMPOUND, 30, "347.85"),
        (InterestFormula.COMPOUND, 31, "361.33"),
        # Mixed: simple up to 30 days, then compound over all 31 days.
        (InterestFormula.MIXED, 30, "300.00"),
        (InterestFormula.MIXED, 31, "361.33"),
    ],
)
def test_formulas_at_one_percent_a_day(formula: InterestFormula, days: int, expected: str) -> None:
    charges = title_charges(title(days_late=days, interest_rate="1"), "J", rules(formula))
    assert charges.interest == Decimal(expected)


@pytest.mark.parametrize(
    ("formula", "days", "expected"),
    [
        # 0.0333% a day on 1000.00. Simple: 1000 × 30 × 0.000333 = 9.99; × 31 = 10.323.
        (InterestFormula.SIMPLE, 30, "9.99"),
        (InterestFormula.SIMPLE, 31, "10.32"),
        # Compound: 1000 × (1.000333^30 − 1) = 10.0383…; 1000 × (1.000333^31 − 1) = 10.3747…
        (InterestFormula.COMPOUND, 30, "10.04"),
        (InterestFormula.COMPOUND, 31, "10.37"),
        (InterestFormula.MIXED, 30, "9.99"),
        (InterestFormula.MIXED, 31, "10.37"),
    ],
)
def test_formulas_at_the_stored_daily_rate(
    formula: InterestFormula, days: int, expected: str
) -> None:
    charges = title_charges(title(days_late=days, interest_rate="0.0333"), "J", rules(formula))
    assert charges.interest == Decimal(expected)


@pytest.mark.parametrize("formula", list(InterestFormula))
def test_an_amount_a_day_is_always_linear(formula: InterestFormula) -> None:
    charges = title_charges(title(days_late=45, interest_per_day="0.33"), "J", rules(formula))
    assert charges.interest == Decimal("14.85")  # 0.33 × 45


def test_formula_accepts_its_string_value() -> None:
    assert ChargeRules(interest_formula="compound").interest_formula is InterestFormula.COMPOUND  # type: ignore[arg-type]


def test_negative_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="fine_percent"):
        ChargeRules(fine_percent=Decimal("-1"))
    with pytest.raises(ValueError, match="interest_percent_per_month"):
        ChargeRules(interest_percent_per_month=Decimal("NaN"))


# --- fine -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("person_type", "expected"), [("F", "20.00"), ("J", "100.00"), ("F ", "20.00"), ("f", "20.00")]
)
def test_consumer_fine_is_capped(person_type: str, expected: str) -> None:
    charges = title_charges(title(), person_type, ChargeRules(fine_percent=Decimal("10")))
    assert charges.fine == Decimal(expected)


def test_consumer_cap_is_configurable_and_never_raises_the_fine() -> None:
    capped = ChargeRules(fine_percent=Decimal("10"), consumer_fine_cap_percent=Decimal("1"))
    assert title_charges(title(), "F", capped).fine == Decimal("10.00")
    assert title_charges(title(), "F", ChargeRules(fine_percent=Decimal("1.5"))).fine == Decimal(
        "15.00"
    )


def test_fine_and_interest_are_on_the_net_balance() -> None:
    charges = title_charges(
        title(abatements="200.00", interest_rate="0.0333"),
        "J",
        ChargeRules(fine_percent=Decimal("2")),
    )
    assert charges.net_balance == Decimal("800.00")
    assert charges.fine == Decimal("16.00")
    assert charges.interest == Decimal("4.53")  # 800 × 17 × 0.000333 = 4.5288
    assert charges.total == Decimal("820.53")


def test_abatements_above_the_balance_leave_nothing_to_charge() -> None:
    charges = title_charges(title(abatements="1500.00", interest_per_day="0.33"), "J", FINE_2)
    assert charges.abatements == Decimal("1000.00")  # applied: at most the balance
    assert (charges.net_balance, charges.fine, charges.interest) == (Decimal("0.00"),) * 3
    assert charges.total == Decimal("0.00")


def test_fine_rounds_half_up() -> None:
    # 0.25 × 2% = 0.005 → 0.01 (half-even would give 0.00).
    assert title_charges(title("0.25"), "J", FINE_2).fine == Decimal("0.01")


# --- not late, additions and deductions -------------------------------------------------------


def test_no_charges_when_not_late() -> None:
    rules_all = ChargeRules(
        fine_percent=Decimal("2"),
        interest_formula=InterestFormula.COMPOUND,
        interest_percent_per_month=Decimal("1"),
    )
    charges = title_charges(
        title(days_late=0, interest_rate="0.0333", additions="10.00", deductions="4.00"),
        "J",
        rules_all,
    )
    assert (charges.fine, charges.interest) == (Decimal("0.00"), Decimal("0.00"))
    assert charges.total == Decimal("1006.00")


def test_additions_and_deductions() -> None:
    charges = title_charges(
        title(interest_rate="0.0333", additions="12.34", deductions="5.00"), "J", FINE_2
    )
    assert charges.additions == Decimal("12.34")
    assert charges.deductions == Decimal("5.00")
    assert charges.total == Decimal("1033.00")  # 1000 + 20 + 5.66 + 12.34 − 5


def test_deductions_larger_than_everything_make_zero_not_negative() -> None:
    charges = title_charges(
        title(interest_rate="0.0333", additions="1.00", deductions="5000.00"), "J", FINE_2
    )
    assert charges.deductions == Decimal("1026.66")  # applied: what was owed before them
    assert charges.total == Decimal("0.00")
    assert parts_total(charges) == charges.total


def test_every_field_is_a_two_place_decimal() -> None:
    charges = title_charges(
        title("1000", interest_rate="0.0333", additions="1", deductions="0.5"), "J", FINE_2
    )
    for name in MONEY_FIELDS:
        value = getattr(charges, name)
        assert type(value) is Decimal, name
        assert value.as_tuple().exponent == -2, name


def test_totals_sum_every_column() -> None:
    rows = [
        title_charges(title(interest_rate="0.0333"), "J", FINE_2),
        title_charges(title(interest_per_day="0.33", additions="1.00"), "J", FINE_2),
        title_charges(title(days_late=0, deductions="0.50"), "J", FINE_2),
    ]
    summed = totals(rows)
    assert summed.fine == Decimal("40.00")
    assert summed.interest == Decimal("11.27")
    assert summed.total == Decimal("3051.77")
    assert summed.total == (
        summed.net_balance + summed.fine + summed.interest + summed.additions - summed.deductions
    )
    assert summed.total == sum((r.total for r in rows), Decimal("0.00"))
    assert totals([]) == ChargeTotals()
    assert all(getattr(totals([]), name).as_tuple().exponent == -2 for name in MONEY_FIELDS)


# --- properties -------------------------------------------------------------------------------

money = st.decimals(min_value=0, max_value=Decimal("10000000"), places=2)
small_money = st.decimals(min_value=0, max_value=Decimal("1000"), places=2)
daily_percent = st.one_of(st.just(Decimal("0")), st.decimals(min_value=0, max_value=2, places=4))
days = st.integers(min_value=0, max_value=400)
person_types = st.sampled_from(["F", "J"])


@st.composite
def titles(draw: st.DrawFn) -> Title:
    return title(
        draw(money),
        draw(days),
        abatements=draw(st.one_of(st.just(Decimal("0.00")), money)),
        interest_rate=draw(daily_percent),
        interest_per_day=draw(st.one_of(st.just(Decimal("0.00")), small_money)),
        additions=draw(st.one_of(st.just(Decimal("0.00")), small_money)),
        deductions=draw(st.one_of(st.just(Decimal("0.00")), money)),
    )


charge_rules = st.builds(
    ChargeRules,
    fine_percent=st.decimals(min_value=0, max_value=20, places=2),
    interest_formula=st.sampled_from(list(InterestFormula)),
    interest_percent_per_month=st.one_of(
        st.none(), st.decimals(min_value=0, max_value=30, places=4)
    ),
)


@settings(deadline=None)
@given(titles(), person_types, charge_rules)
def test_total_is_the_sum_of_its_rounded_parts(t: Title, person: str, r: ChargeRules) -> None:
    charges = title_charges(t, person, r)
    assert charges.total == parts_total(charges)
    assert charges.total >= 0
    assert 0 <= charges.deductions <= t.deductions
    assert 0 <= charges.abatements <= charges.balance
    for name in MONEY_FIELDS:
        value = getattr(charges, name)
        assert type(value) is Decimal
        assert value.as_tuple().exponent == -2, (name, value)
    if charges.days_late == 0:
        assert charges.fine == charges.interest == Decimal("0.00")


@settings(deadline=None)
@given(titles(), charge_rules)
def test_consumer_fine_never_exceeds_two_percent(t: Title, r: ChargeRules) -> None:
    charges = title_charges(t, "F", r)
    cap = (charges.net_balance * Decimal("0.02")).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert charges.fine <= cap


@settings(deadline=None)
@given(titles(), person_types, charge_rules, st.integers(min_value=1, max_value=60))
def test_interest_never_decreases_with_days(
    t: Title, person: str, r: ChargeRules, more: int
) -> None:
    earlier = title_charges(t, person, r)
    later = title_charges(replace(t, days_late=t.days_late + more), person, r)
    assert later.interest >= earlier.interest
    assert later.fine >= earlier.fine


@settings(deadline=None)
@given(st.lists(st.tuples(titles(), person_types), max_size=5), charge_rules)
def test_totals_equal_the_sum_of_rows(rows: list[tuple[Title, str]], r: ChargeRules) -> None:
    charges = [title_charges(t, person, r) for t, person in rows]
    summed = totals(charges)
    for name in MONEY_FIELDS:
        assert getattr(summed, name) == sum((getattr(c, name) for c in charges), Decimal("0.00"))
    assert summed.total >= 0


def test_title_charges_fields_are_the_documented_ones() -> None:
    names = {f.name for f in fields(TitleCharges)}
    assert set(MONEY_FIELDS) <= names
    assert {f.name for f in fields(ChargeTotals)} == set(MONEY_FIELDS)


def _interest_in_a_local_context(
    base: Decimal, percent: Decimal, days: int, formula: InterestFormula
) -> Decimal:
    """The formula as first written, in a localcontext of the same precision."""
    with localcontext() as context:
        context.prec = 50
        t = percent / 100
        if formula is InterestFormula.COMPOUND or (formula is InterestFormula.MIXED and days > 30):
            return base * ((1 + t) ** days - 1)
        return base * days * t


@settings(deadline=None, max_examples=300)
@given(
    st.decimals(min_value=0, max_value=10**9, places=2),
    st.decimals(min_value=0, max_value=10, places=4),
    st.integers(min_value=0, max_value=3650),
    st.sampled_from(list(InterestFormula)),
)
def test_interest_is_computed_exactly_as_in_a_local_context(
    base: Decimal, percent: Decimal, days: int, formula: InterestFormula
) -> None:
    """The shared 50-digit context gives every digit the per-call localcontext gave."""
    expected = _interest_in_a_local_context(base, percent, days, formula)
    got = _percent_interest(base, percent, days, formula)
    assert (got, got.as_tuple()) == (expected, expected.as_tuple())
