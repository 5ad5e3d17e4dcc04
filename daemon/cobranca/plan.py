"""Decide which customer gets which letter today.

A pure function of the customer's títulos, the layout's rules, the history (when this customer
last got this layout) and the as-of date: no database, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from .addresses import split_addresses
from .config import Layout
from .models import CustomerTitles, Disposition, PlannedLetter, Title, trusted

# Reasons a customer gets no letter; the run summary counts them.
SKIP_CADENCE = "cadence"
SKIP_BELOW_MINIMUM = "below_minimum_balance"
SKIP_NO_VALID_TITLES = "no_valid_titles"
SKIP_ALREADY_CLAIMED = "already_claimed"
SKIP_PAID_SINCE_PLAN = "paid_since_planned"
SKIP_SUSPENDED = "suspended_by_response"
SKIP_REASONS = {
    SKIP_CADENCE: "got this layout within its cadence",
    SKIP_BELOW_MINIMUM: "open balance after abatements below the layout's minimum",
    SKIP_NO_VALID_TITLES: "every selected título was unreadable (see rejected títulos)",
    SKIP_ALREADY_CLAIMED: "today's letter exists already: sent, being sent, dropped, or "
    "awaiting print or a person",
    SKIP_SUSPENDED: "every título is held back by a customer response (promise, dispute...)",
    SKIP_PAID_SINCE_PLAN: "every título was paid or written off after the letter was planned",
}


def plan_letter(
    group: CustomerTitles,
    layout: Layout,
    as_of: date,
    last_sent: date | None,
    suspended: Sequence[tuple[str | None, str]] = (),
) -> PlannedLetter:
    """The letter (or the reason for none) for one customer and one layout.

    ``suspended`` lists (título key, or None for every título, and why) held back by the
    customer's responses; those títulos are left out, each with its reason.
    """
    customer = group.customer
    minimum = layout.selection.min_balance
    held = {key: why for key, why in suspended}
    on_hold: tuple[tuple[str, str], ...] = ()
    if held:
        on_hold = tuple(
            (t.key, held.get(t.key) or held[None])
            for t in group.titles
            if t.key in held or None in held
        )
    held_keys = {key for key, _ in on_hold}
    # One pass, each título's net balance (Title.net_balance) computed once.
    kept: list[Title] = []
    nothing_owed: list[tuple[str, str]] = []
    for t in group.titles:
        net = t.balance - t.abatements
        if net <= 0:
            nothing_owed.append((t.key, "nothing owed after abatements"))
        elif net >= minimum and (not held_keys or t.key not in held_keys):
            kept.append(t)
    titles = tuple(kept)
    valid, invalid = split_addresses(customer.raw_emails)
    rejected = group.rejected + tuple(nothing_owed)

    def letter(disposition: Disposition, reason: str = "") -> PlannedLetter:
        return trusted(PlannedLetter, {
            "layout": layout.name,
            "as_of": as_of,
            "customer": customer,
            "titles": titles,
            "recipients": valid,
            "disposition": disposition,
            "reason": reason,
            "invalid_emails": invalid,
            "rejected": rejected,
        })  # fmt: skip

    if not group.titles:
        return letter(Disposition.SKIP, SKIP_NO_VALID_TITLES)
    if not titles and on_hold:
        return letter(Disposition.SKIP, SKIP_SUSPENDED)
    if not titles:
        return letter(Disposition.SKIP, SKIP_BELOW_MINIMUM)
    if last_sent is not None and as_of < last_sent + timedelta(days=layout.cadence_days):
        return letter(Disposition.SKIP, SKIP_CADENCE)
    if not valid:
        why = "no e-mail address" if not invalid else f"no valid e-mail in {', '.join(invalid)}"
        return letter(Disposition.PRINT, why)
    return letter(Disposition.SEND)


def cadence_window_start(layout: Layout, as_of: date) -> date:
    """Letters on or after this date still block a new one under the layout's cadence."""
    return as_of - timedelta(days=layout.cadence_days - 1)
