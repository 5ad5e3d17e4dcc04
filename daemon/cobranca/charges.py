"""Late charges (multa, juros) per título up to a letter's reference date, as Protheus does.

The letter must show the same amounts as the ERP and the boleto, so every step follows
Protheus: the rate stored in the título (E1_PORCJUR, % a day, or else E1_VALJUR, R$ a day) wins
over the layout's configured rate; days late come already counted in ``Title.days_late``.

Everything is Decimal. Each money component is rounded half-up to cents *before* it is summed,
so a letter's TOTAL column always equals the sum of the columns it shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import StrEnum

from .models import Title
from .protheus import CENTS

ZERO = Decimal("0.00")
HUNDRED = Decimal("100")
# Days in a month when a monthly rate becomes a daily one (Protheus: monthly / 30).
DAYS_PER_MONTH = Decimal("30")
# Places Protheus keeps in E1_PORCJUR for a daily rate derived from a monthly one (1% → 0.0333).
DAILY_RATE_PLACES = Decimal("0.0001")
# Mixed formula: simple interest up to this many days late, compound over all days after.
MIXED_SIMPLE_DAYS = 30
# Working precision for (1 + t)^d: far more digits than cents need, whatever d is.
_PRECISION = 50
# Its arithmetic, as one context: entering localcontext() for each título cost ~15 µs,
# 3 % of composing a letter. Rounding and traps are the default context's.
_EXACT = Context(prec=_PRECISION)


class InterestFormula(StrEnum):
    """MV_JURTIPO: how a daily percentage accrues over the days late (S, C or M in Protheus)."""

    SIMPLE = "simple"
    COMPOUND = "compound"
    MIXED = "mixed"  # simple up to 30 days late, compound (over all days) after


class InterestSource(StrEnum):
    """Where the daily interest came from, so a letter can say which rate it used."""

    TITLE_PERCENT = "title_percent"  # E1_PORCJUR (% a day) of the título
    TITLE_AMOUNT = "title_amount"  # E1_VALJUR (R$ a day) of the título: E1_PORCJUR is zero
    LAYOUT = "layout"  # neither in the título: the layout's monthly rate, made daily
    NONE = "none"  # no rate anywhere: no interest


@dataclass(frozen=True)
class ChargeRules:
    """A layout's charge settings; the título's own rates take precedence over the interest one.

    ``interest_percent_per_month`` is the contractual (or legal: Selic − IPCA, published monthly)
    rate, and is configuration, never a constant in code: None or 0 means no fallback rate.
    """

    fine_percent: Decimal = Decimal("0")
    interest_formula: InterestFormula = InterestFormula.SIMPLE
    interest_percent_per_month: Decimal | None = None
    consumer_fine_cap_percent: Decimal = Decimal("2")  # CDC art. 52 §1º

    def __post_init__(self) -> None:
        for name in ("fine_percent", "interest_percent_per_month", "consumer_fine_cap_percent"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite, non-negative Decimal, got {value!r}")
        object.__setattr__(self, "interest_formula", InterestFormula(self.interest_formula))


@dataclass(frozen=True)
class DailyInterest:
    """The daily interest a título accrues: a percentage or a fixed amount, never both."""

    source: InterestSource
    percent: Decimal  # % a day (0 unless source is TITLE_PERCENT or LAYOUT)
    amount: Decimal  # R$ a day (0.00 unless source is TITLE_AMOUNT)


@dataclass(frozen=True)
class TitleCharges:
    """One título's letter row. Every money field is Decimal with two places.

    ``abatements`` and ``deductions`` are the amounts *applied* (abatements at most the balance;
    deductions at most what is owed before them), so that
    ``total == net_balance + fine + interest + additions - deductions`` holds exactly and the total
    is never negative. The stored values stay on the ``Title``.
    """

    days_late: int
    balance: Decimal
    abatements: Decimal
    fine: Decimal
    interest: Decimal
    additions: Decimal
    deductions: Decimal
    total: Decimal
    interest_source: InterestSource = InterestSource.NONE

    @property
    def net_balance(self) -> Decimal:
        """Balance minus the abatements applied: the base of fine and interest."""
        return self.balance - self.abatements


@dataclass(frozen=True)
class ChargeTotals:
    """Column sums of a letter's rows; each is a sum of already rounded amounts."""

    balance: Decimal = ZERO
    abatements: Decimal = ZERO
    fine: Decimal = ZERO
    interest: Decimal = ZERO
    additions: Decimal = ZERO
    deductions: Decimal = ZERO
    total: Decimal = ZERO

    @property
    def net_balance(self) -> Decimal:
        return self.balance - self.abatements


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENTS, ROUND_HALF_UP)


def _non_negative_money(value: Decimal) -> Decimal:
    """A stored balance as cents; a negative one (bad data) counts as nothing."""
    return max(_money(value), ZERO)


def monthly_to_daily(percent_per_month: Decimal) -> Decimal:
    """A monthly % → the daily % Protheus stores in E1_PORCJUR (monthly / 30, 4 places half-up).

    Using the stored, rounded rate (1% a month → 0.0333) rather than the exact fraction keeps the
    letter equal to what the ERP and the boleto show.
    """
    return (percent_per_month / DAYS_PER_MONTH).quantize(DAILY_RATE_PLACES, ROUND_HALF_UP)


def daily_interest(title: Title, rules: ChargeRules) -> DailyInterest:
    """Which daily interest applies: E1_PORCJUR, else E1_VALJUR, else the layout's rate."""
    if title.interest_rate > 0:
        return DailyInterest(InterestSource.TITLE_PERCENT, title.interest_rate, ZERO)
    if title.interest_per_day > 0:
        return DailyInterest(
            InterestSource.TITLE_AMOUNT, Decimal("0"), _money(title.interest_per_day)
        )
    monthly = rules.interest_percent_per_month
    if monthly:
        daily = monthly_to_daily(monthly)
        if daily > 0:
            return DailyInterest(InterestSource.LAYOUT, daily, ZERO)
    return DailyInterest(InterestSource.NONE, Decimal("0"), ZERO)


def _percent_interest(
    base: Decimal, percent: Decimal, days: int, formula: InterestFormula
) -> Decimal:
    """Interest on ``base`` at ``percent`` a day over ``days``, unrounded."""
    exact = _EXACT
    t = exact.divide(percent, HUNDRED)
    compound = formula is InterestFormula.COMPOUND or (
        formula is InterestFormula.MIXED and days > MIXED_SIMPLE_DAYS
    )
    if compound:  # base × ((1 + t)^days − 1)
        return exact.multiply(base, exact.subtract(exact.power(exact.add(1, t), days), 1))
    return exact.multiply(exact.multiply(base, days), t)  # base × days × t


def fine_percent(person_type: str, rules: ChargeRules) -> Decimal:
    """The fine % for this customer: consumers ('F') are capped by CDC art. 52 §1º."""
    if person_type.strip().upper() == "F":
        return min(rules.fine_percent, rules.consumer_fine_cap_percent)
    return rules.fine_percent


def title_charges(title: Title, person_type: str, rules: ChargeRules) -> TitleCharges:
    """Fine, interest and total of one título up to the reference its ``days_late`` was counted for.

    A título not late (days_late 0) carries no fine nor interest; its additions and deductions
    (E1_SDACRES, E1_SDDECRE) still apply. With nothing owed (fully abated) nothing accrues,
    not even an E1_VALJUR amount a day.
    """
    balance = _non_negative_money(title.balance)
    abatements = min(_non_negative_money(title.abatements), balance)
    base = balance - abatements
    days = max(title.days_late, 0)
    daily = daily_interest(title, rules)

    fine = interest = ZERO
    if days > 0 and base > 0:
        fine = _money(base * fine_percent(person_type, rules) / HUNDRED)
        if daily.source is InterestSource.TITLE_AMOUNT:
            interest = _money(daily.amount * days)  # a fixed amount a day: always linear
        elif daily.percent > 0:
            interest = _money(_percent_interest(base, daily.percent, days, rules.interest_formula))

    additions = _non_negative_money(title.additions)
    before_deductions = base + fine + interest + additions
    deductions = min(_non_negative_money(title.deductions), before_deductions)
    return TitleCharges(
        days_late=days,
        balance=balance,
        abatements=abatements,
        fine=fine,
        interest=interest,
        additions=additions,
        deductions=deductions,
        total=before_deductions - deductions,
        interest_source=daily.source,
    )


def totals(items: Iterable[TitleCharges]) -> ChargeTotals:
    """Sum each column of a letter's rows (they are rounded already: the sums are exact)."""
    sums = dict.fromkeys(
        ("balance", "abatements", "fine", "interest", "additions", "deductions", "total"), ZERO
    )
    for item in items:
        for name in sums:
            sums[name] += getattr(item, name)
    return ChargeTotals(**sums)
