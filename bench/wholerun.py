"""Child process: one whole daily run (`run_layouts`), then its figures as JSON on stdout.

Run in its own process so its peak RSS is the run's alone (the parent holds sample letters
and messages). Logging is configured as `cobranca run` does (INFO, text) and goes to this
process's stderr, which the parent sends to a file: the daemon's per-letter log lines cost what
they cost in production.

    python -m bench.wholerun CONFIG AS_OF [--profile OUT.html|OUT.txt]
    python -m bench.wholerun CONFIG AS_OF --share-until DONE_FILE

With --share-until it is an extra sender: it joins the run another process plans, as a second
`cobranca run` or daemon on the same history does (`run_layouts(..., deliver_only=True)`), again
and again until DONE_FILE exists and nothing is left, and reports the letters it sent.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any


def peak_rss_kib() -> int:
    """VmHWM (peak resident set) of this process, in KiB; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _phases(config: Any, run_ids: list[int]) -> dict[str, float | None]:
    """Plan and deliver time of each run, from the history's own timestamps."""
    from sqlalchemy import func, select

    from cobranca.history import HistoryStore, LetterRecord, RunRecord

    store = HistoryStore(config.history.engine_url())
    plan = deliver = 0.0
    try:
        with store.engine.connect() as connection:
            for run_id in run_ids:
                started, finished = connection.execute(
                    select(RunRecord.started_at, RunRecord.finished_at).where(
                        RunRecord.id == run_id
                    )
                ).one()
                planned_until = connection.scalar(
                    select(func.max(LetterRecord.created_at)).where(LetterRecord.run_id == run_id)
                )
                if started is None or finished is None:
                    continue
                planned_until = planned_until or started
                plan += (planned_until - started).total_seconds()
                deliver += (finished - planned_until).total_seconds()
    except Exception as exc:  # the history's schema is not ours: figures are optional
        print(f"phase split unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"plan_s": None, "deliver_s": None}
    finally:
        store.close()
    return {"plan_s": plan, "deliver_s": deliver}


def time_to_letter(config_path: Path, number: int) -> float | None:
    """Seconds from the first run's start to the ``number``-th letter sent, from the history's
    own times (``sent_at``), whichever process sent it; None when fewer were sent."""
    from sqlalchemy import func, select

    from cobranca.config import load_config
    from cobranca.history import HistoryStore, LetterRecord, RunRecord
    from cobranca.models import LetterStatus

    store = HistoryStore(load_config(config_path).history.engine_url())
    try:
        with store.engine.connect() as connection:
            started = connection.scalar(select(func.min(RunRecord.started_at)))
            reached = connection.scalar(
                select(LetterRecord.sent_at)
                .where(LetterRecord.status == LetterStatus.SENT.value)
                .order_by(LetterRecord.sent_at)
                .offset(number - 1)
                .limit(1)
            )
    finally:
        store.close()
    if started is None or reached is None:
        return None
    return (reached - started).total_seconds()


_VERB = re.compile(r"^\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM|WITH)\b", re.IGNORECASE)
_FROM = re.compile(r"\bFROM\s+\(?\s*\"?(\w+)", re.IGNORECASE)
_TABLE = re.compile(r"^\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+\"?(\w+)", re.IGNORECASE)


def _statement_kind(sql: str) -> str:
    """'INSERT cobranca_events', 'SELECT se1010'...: verb and first table of a statement."""
    verb = _VERB.match(sql)
    if verb is None:
        return sql.split(None, 1)[0].upper() if sql.strip() else "?"
    word = verb.group(1).split()[0].upper()
    table = _TABLE.match(sql) if word != "SELECT" else _FROM.search(sql)
    return f"{word} {table.group(1).lower() if table else '?'}"


class SqlCounter:
    """Statements and commits per engine (source, history), counted by SQLAlchemy events.

    A few microseconds per statement: next to milliseconds per letter it does not show.
    """

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.statements: Counter[str] = Counter()
        self.commits = 0
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        database = conn.engine.url.database or ""
        role = "history" if "hist" in Path(database).name else "source"
        self.statements[f"{role}: {_statement_kind(statement)}"] += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wholerun")
    parser.add_argument("config", type=Path)
    parser.add_argument("as_of", type=date.fromisoformat)
    parser.add_argument("--profile", type=Path, help="pyinstrument output: PATH.html and PATH.txt")
    parser.add_argument("--share-until", type=Path, help="an extra sender until this file exists")
    args = parser.parse_args(argv)
    if args.share_until:
        return share(args.config, args.as_of, args.share_until)

    rss_before_import = peak_rss_kib()
    from cobranca.config import load_config
    from cobranca.logs import configure
    from cobranca.runner import run_layouts

    configure("INFO", "text")
    config = load_config(args.config)
    rss_ready = peak_rss_kib()

    counter = SqlCounter()
    profiler = None
    if args.profile:
        from pyinstrument import Profiler  # optional: only with --profile

        profiler = Profiler(interval=0.001)
        profiler.start()
    start_cpu = time.process_time()
    start = time.perf_counter()
    report = run_layouts(config, as_of=args.as_of, ignore_calendar=True, trigger="manual")
    wall = time.perf_counter() - start
    cpu = time.process_time() - start_cpu
    if profiler is not None:
        profiler.stop()
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.with_suffix(".html").write_text(profiler.output_html(), encoding="utf-8")
        args.profile.with_suffix(".txt").write_text(
            profiler.output_text(unicode=True, color=False, show_all=False), encoding="utf-8"
        )
    peak = peak_rss_kib()

    layouts = [r.as_dict() for r in report.results]
    totals = {
        key: sum(int(layout[key]) for layout in layouts)
        for key in ("planned", "sent", "print_needed", "failed", "ambiguous", "left_planned")
    }
    totals["skipped"] = sum(sum(layout["skipped"].values()) for layout in layouts)
    run_ids = [r.run_id for r in report.results if r.run_id is not None]
    errors = [f"{layout['layout']}: {layout['error']}" for layout in layouts if layout["error"]]
    out = {
        "wall_s": wall,
        "cpu_s": cpu,
        "letters": totals["sent"],
        "letters_per_s": totals["sent"] / wall if wall else 0.0,
        **totals,
        **_phases(config, run_ids),
        "errors": errors,
        "sql_statements": sum(counter.statements.values()),
        "sql_commits": counter.commits,
        "sql_by_kind": dict(counter.statements.most_common()),
        "rss_before_import_kib": rss_before_import,
        "rss_ready_kib": rss_ready,
        "peak_rss_kib": peak,
        "per_layout": [
            {
                k: layout[k]
                for k in (
                    "layout",
                    "planned",
                    "sent",
                    "print_needed",
                    "failed",
                    "skipped",
                    "left_planned",
                )
            }
            for layout in layouts
        ],
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if not errors else 1


def share(config_path: Path, as_of: date, done: Path) -> int:
    """An extra sender: deliver what the main process plans, until it is done."""
    from cobranca.config import load_config
    from cobranca.logs import configure
    from cobranca.runner import run_layouts

    configure("INFO", "text")
    config = load_config(config_path)
    sent = passes = 0
    start = time.perf_counter()
    while True:
        finished = done.exists()  # before the pass: a pass after the end finds nothing left
        report = run_layouts(config, as_of=as_of, ignore_calendar=True, deliver_only=True)
        passes += 1
        now_sent = sum(result.sent for result in report.results)
        sent += now_sent
        if finished and not now_sent:
            break
        if not now_sent:
            time.sleep(0.2)
    out = {"letters": sent, "passes": passes, "wall_s": time.perf_counter() - start,
           "peak_rss_kib": peak_rss_kib()}  # fmt: skip
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
