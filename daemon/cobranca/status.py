"""`cobranca status`: is the schedule healthy? A monitoring check (exit 1 on any warning).

Per enabled layout: the next fire time, the last day's runs (when, sent/failed/ambiguous,
summed over retries and the passes of daemons sharing the run), and warnings: a slot that
passed without a finished run, a day with no letter where the previous days had many, failures
above 10 % of the letters tried, a run that stopped on an error.
"""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import Config, Layout
from .cron import parse_cron
from .history import HistoryStore, RunRecord
from .scheduler import MISFIRE_GRACE_SECONDS, SHARED_TRIGGER

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


RUNS_LOOKED_AT = 200  # a layout's latest runs read for its last days (retries, shared passes)
USUAL_DAYS = 5  # the days before the last one that say what a day usually makes


def layout_warnings(
    layout: Layout, config: Config, history: HistoryStore, now: datetime
) -> tuple[str, list[str]]:
    """The layout's last day of runs in one line, and what is wrong with its schedule.

    A day's letters may come from several runs: retries, and with several daemons the passes
    of those sharing the holder's run (trigger "shared"). Counts are the day's, summed; whether
    it stopped on an error is the day's latest run of its own (not a shared pass).
    """
    warnings: list[str] = []
    with Session(history.engine) as session:
        runs = list(
            session.scalars(
                select(RunRecord)
                .where(RunRecord.layout == layout.name)
                .order_by(RunRecord.started_at.desc())
                .limit(RUNS_LOOKED_AT)
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
    days: dict[date, list[RunRecord]] = {}
    for run in runs:  # newest first: the first day is the last one run
        days.setdefault(run.as_of, []).append(run)
    (as_of, today), *earlier = days.items()
    own = [run for run in today if run.trigger != SHARED_TRIGGER] or today
    if own[0].status == "failed":
        warnings.append(f"last run stopped on an error: {own[0].error}")
    sent, printed, failed, ambiguous = (
        sum(getattr(run, name) for run in today)
        for name in ("sent", "print_needed", "failed", "ambiguous")
    )
    tried = sent + failed + ambiguous
    if tried and (failed + ambiguous) / tried > FAILURE_SHARE:
        warnings.append(f"{failed} failed and {ambiguous} ambiguous of {tried} letters")
    usual = [
        sum(run.sent + run.print_needed for run in day)
        for _, day in earlier[:USUAL_DAYS]
        if any(run.status == "finished" for run in day)
    ]
    if usual and sent + printed == 0 and min(usual) >= USUAL_MINIMUM:
        warnings.append(f"last run made no letter; the previous ones made {min(usual)}+")
    latest = today[0]
    when = latest.started_at.astimezone(config.zone)
    runs_of_day = f" ({len(today)} runs for {as_of.isoformat()})" if len(today) > 1 else ""
    summary = (
        f"last {when:%Y-%m-%d %H:%M} {latest.status}: {sent} sent, {failed} failed, "
        f"{ambiguous} ambiguous{runs_of_day}"
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
