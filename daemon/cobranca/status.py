"""`cobranca status`: is the schedule healthy? A monitoring check (exit 1 on any warning).

Per enabled layout: the next fire time, the last run (when, sent/failed/ambiguous), and
warnings: a slot that passed without a finished run, a run with no letter where the previous
runs had many, failures above 10 % of the letters tried, a run that stopped on an error.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import Config, Layout
from .cron import parse_cron
from .history import HistoryStore, RunRecord
from .scheduler import MISFIRE_GRACE_SECONDS

FAILURE_SHARE = 0.10
USUAL_MINIMUM = 5


def add_status_parser(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    commands.add_parser(
        "status", parents=parents, help="is the daemon's schedule healthy (exit 1: warnings)"
    )


def last_due(layout: Layout, config: Config, now: datetime) -> datetime | None:
    """The layout's latest fire time at or before now (looking back a week)."""
    trigger = parse_cron(layout.schedule, config.zone)
    moment, found = now - timedelta(days=8), None
    for _ in range(20_000):
        fire = trigger.get_next_fire_time(None, moment)
        if fire is None or fire > now:
            break
        found, moment = fire, fire + timedelta(seconds=1)
    return found


def layout_warnings(
    layout: Layout, config: Config, history: HistoryStore, now: datetime
) -> tuple[str, list[str]]:
    warnings: list[str] = []
    with Session(history.engine) as session:
        runs = list(
            session.scalars(
                select(RunRecord)
                .where(RunRecord.layout == layout.name)
                .order_by(RunRecord.started_at.desc())
                .limit(6)
            )
        )
    due = last_due(layout, config, now)
    if due is not None and now - due > timedelta(seconds=MISFIRE_GRACE_SECONDS):
        slot = history.slot(layout.name, due.date())
        if slot is None or slot.status != "finished":
            state = "no run" if slot is None else f"slot {slot.status}"
            warnings.append(f"did not run when due at {due:%Y-%m-%d %H:%M} ({state})")
    if not runs:
        return "never ran", warnings
    last, previous = runs[0], runs[1:]
    tried = last.sent + last.failed + last.ambiguous
    if last.status == "failed":
        warnings.append(f"last run stopped on an error: {last.error}")
    if tried and (last.failed + last.ambiguous) / tried > FAILURE_SHARE:
        warnings.append(f"{last.failed} failed and {last.ambiguous} ambiguous of {tried} letters")
    usual = [r.sent + r.print_needed for r in previous if r.status == "finished"]
    if usual and last.sent + last.print_needed == 0 and min(usual) >= USUAL_MINIMUM:
        warnings.append(f"last run made no letter; the previous ones made {min(usual)}+")
    when = last.started_at.astimezone(config.zone)
    summary = (
        f"last {when:%Y-%m-%d %H:%M} {last.status}: {last.sent} sent, {last.failed} failed, "
        f"{last.ambiguous} ambiguous"
    )
    return summary, warnings


def status_command(config: Config, now: datetime) -> int:
    history = HistoryStore(config.history.engine_url())
    total = 0
    try:
        for layout in config.layouts:
            if not layout.enabled:
                continue
            upcoming = parse_cron(layout.schedule, config.zone).get_next_fire_time(None, now)
            summary, warnings = layout_warnings(layout, config, history, now)
            print(f"{layout.name}: next {upcoming:%Y-%m-%d %H:%M}; {summary}")
            for warning in warnings:
                print(f"  WARNING: {warning}")
            total += len(warnings)
    finally:
        history.close()
    print("OK" if not total else f"{total} warning(s)")
    return 0 if not total else 1
