"""Where a letter's time goes: each step of a run timed alone, or one stage under pyinstrument.

    .venv/bin/python -m bench.profile breakdown --size 100k --backend sqlite --sample 1000
    .venv/bin/python -m bench.profile breakdown --size 100k --backend sqlite --claim-size 1
    .venv/bin/pip install pyinstrument        # only the profiles need it
    .venv/bin/python -m bench.profile source --size 100k --backend sqlite
    .venv/bin/python -m bench.profile render --size 100k --sample 500
    .venv/bin/python -m bench.profile history --size 100k --sample 500
    .venv/bin/python -m bench.profile statements --size 100k --layouts ladder

breakdown: the steps the runner takes (runner._plan and runner.deliver_batch, in the same
batches), each called on its own for `--sample` letters on a fresh history store, in
milliseconds per letter; their sum set against the whole run's time per letter says what the
steps leave out.
source: customers_titles + plan_letter over every selected row. render: compose. history:
record_plans + claim_batch + finish_letters, in the runner's batches. statements: a whole run
in this one process (no profiler), then the SQL texts it sent, per statement with its IN lists
folded, and the most memory SQLite held: each text is a statement SQLite prepares and keeps,
128 a connection. Profiles are written to
bench/results/profile-<stage>-<backend>-<size>.txt and .html and printed. For the whole run:
`python -m bench.run --parts run --profile`.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench import benchconfig, datasets
from bench.run import RESULTS_DIR, WORK_DIR, empty_trash, log, set_aside
from bench.wholerun import peak_rss_kib
from cobranca.config import Config, Layout
from cobranca.history import HistoryStore, LetterFinish, LetterOutcome, PlanEntry
from cobranca.mail import build_message, new_message_id
from cobranca.models import Disposition, LetterStatus, PlannedLetter
from cobranca.payment import letter_payment
from cobranca.plan import plan_letter
from cobranca.render import compose, load_templates, make_environment
from cobranca.runner import PLAN_BATCH, layout_rule, run_layouts, templates_digest
from cobranca.source import ProtheusSource
from cobranca.transports import open_transport


@contextmanager
def _environment(
    backend: str, size: str, layout_kind: str = "wide"
) -> Iterator[tuple[Config, str]]:
    """A config on the benchmark database with a fresh history store; removed afterwards."""
    dataset = datasets.ensure_dataset(backend, size, log)
    work = WORK_DIR / f"profile-{backend}-{size}"
    set_aside(work)  # not deleted now: that would slow this profile's outbox (run.set_aside)
    work.mkdir(parents=True)
    pg_history = None
    try:
        if backend == "postgresql":
            pg_history = f"cobranca_bench_hist_profile_{size}"
            history_url = datasets.pg_create_database(pg_history, replace=True)
        else:
            history_url = f"sqlite:///{work / 'history.db'}"
        data = benchconfig.config_data(
            source_url=dataset.url,
            history_url=history_url,
            transport="outbox",
            outbox=work / "outbox",
            layout_kind=layout_kind,
        )
        yield benchconfig.write_config(work / "profile.yaml", data), history_url
    finally:
        if pg_history:
            datasets.pg_drop_database(pg_history)
        set_aside(work)
        empty_trash()


def _sample(config: Config, layout: Layout, size: int) -> list[PlannedLetter]:
    source = ProtheusSource(config.source)
    letters: list[PlannedLetter] = []
    try:
        for group in source.customers_titles(layout.selection, datasets.AS_OF):
            letter = plan_letter(group, layout, datasets.AS_OF, None, ())
            if letter.disposition is Disposition.SEND:
                letters.append(letter)
                if len(letters) >= size:
                    break
    finally:
        source.close()
    return letters


class _Clock:
    """Accumulates the time of each named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = work()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return value


def breakdown(
    config: Config,
    history_url: str,
    letters: Sequence[PlannedLetter],
    claim_size: int | None = None,
) -> dict[str, Any]:
    """Each step of a run, alone, in the runner's order and batches: ms per letter.

    ``claim_size`` letters are claimed, sent and recorded at a time: the outbox's batch by
    default; 1 is what the SMTP transport does (the letters still go to the outbox here).
    """
    layout = config.layouts[0]
    as_of = datasets.AS_OF
    clock = _Clock()
    history = HistoryStore(history_url)
    source = ProtheusSource(config.source)
    templates = load_templates(
        make_environment(config.templates_dir), layout.template, layout.subject
    )
    rule, digest = layout_rule(layout), templates_digest(config.templates_dir)
    grace = config.responses.promise_grace_days
    try:
        run_id = history.start_run(layout.name, as_of, "manual", "bench")
        for start in range(0, len(letters), PLAN_BATCH):
            entries = [
                PlanEntry(letter, new_message_id(config.delivery), "outbox",
                          LetterStatus.PLANNED, rule=rule, templates_digest=digest)
                for letter in letters[start : start + PLAN_BATCH]
            ]  # fmt: skip
            clock("plan: history.record_plans", lambda e=entries: history.record_plans(run_id, e))
        with open_transport(config.delivery) as transport:
            while True:
                batch = clock(
                    "deliver: history.claim_batch",
                    lambda: history.claim_batch(
                        layout.name, as_of, claim_size or transport.batch_size
                    ),
                )
                if not batch:
                    break
                groups = clock(
                    "deliver: source.reread_many",
                    lambda b=batch: source.reread_many(
                        layout.selection, as_of, [c.recnos for c in b]
                    ),
                )
                holds = clock(
                    "deliver: history.suspensions",
                    lambda b=batch: history.suspensions(as_of, grace, [c.customer_code for c in b]),
                )
                finishes = []
                for claimed, group in zip(batch, groups, strict=True):
                    key = (claimed.customer_code, claimed.customer_store)
                    letter = clock(
                        "deliver: plan_letter",
                        lambda g=group, k=key, h=holds: plan_letter(
                            g, layout, as_of, None, h.get(k, ())
                        ),
                    )
                    clock(
                        "deliver: (letter_payment alone, inside compose)",
                        lambda x=letter: letter_payment(x, layout, config.creditor),
                    )
                    composed = clock(
                        "deliver: render.compose",
                        lambda x=letter, c=claimed: compose(
                            templates, x, layout, config.creditor, c.message_id
                        ),
                    )
                    message = clock(
                        "deliver: mail.build_message",
                        lambda x=letter, c=claimed, m=composed: build_message(
                            m.rendered,
                            x.recipients,
                            config.delivery,
                            c.message_id,
                            datetime.now(config.zone),
                            layout.name,
                            (),
                            m.images,
                        ),
                    )
                    clock("deliver: transport.send (outbox)", lambda m=message: transport.send(m))
                    finishes.append(
                        LetterFinish(
                            claimed.id,
                            LetterOutcome(LetterStatus.SENT, sent_at=datetime.now(UTC)),
                            subject=composed.rendered.subject,
                            titles=letter.titles,
                            raw_message=message.text,
                        )
                    )
                clock("deliver: transport.flush (outbox)", transport.flush)
                clock(
                    "deliver: history.finish_letters",
                    lambda f=finishes: history.finish_letters(f),
                )
    finally:
        source.close()
        history.close()
    count = max(1, len(letters))
    per_letter = {name: 1000 * s / count for name, s in clock.seconds.items()}
    total = sum(v for k, v in per_letter.items() if "alone" not in k)
    return {"letters": len(letters), "ms_per_letter": per_letter, "sum_ms_per_letter": total}


_IN_LIST = re.compile(r"\((?:\?|%\(\w+\)s)(?:, (?:\?|%\(\w+\)s))*\)")


def statements(config: Config) -> dict[str, Any]:
    """A whole run in this process: each statement's distinct SQL texts, SQLite's peak memory.

    A statement whose text changes with its data (an IN list's length) is prepared anew and
    kept in SQLite's cache (128 texts a connection) for each text; its distinct texts say how
    much of the cache, and of the run's memory, it takes.
    """
    texts: dict[str, set[str]] = {}

    def watch(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        texts.setdefault(_IN_LIST.sub("(…)", statement), set()).add(statement)

    event.listen(Engine, "before_cursor_execute", watch)
    try:
        report = run_layouts(config, as_of=datasets.AS_OF, ignore_calendar=True)
    finally:
        event.remove(Engine, "before_cursor_execute", watch)
    # The library Python's sqlite3 module links to, where it is a shared one (Debian's).
    library = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    library.sqlite3_memory_highwater.restype = ctypes.c_int64
    by_statement = sorted(((len(found), shape) for shape, found in texts.items()), reverse=True)
    return {
        "letters_sent": sum(result.sent for result in report.results),
        "texts": sum(count for count, _ in by_statement),
        "statements": len(by_statement),
        "texts_by_statement": [{"texts": n, "statement": shape} for n, shape in by_statement],
        "sqlite_memory_highwater_kib": library.sqlite3_memory_highwater(0) // 1024,
        "peak_rss_kib": peak_rss_kib(),
    }


def _profile(
    stage: str, config: Config, history_url: str, letters: list[PlannedLetter]
) -> tuple[str, str]:
    from pyinstrument import Profiler  # optional: only here

    layout = config.layouts[0]
    if stage == "source":

        def target() -> None:
            source = ProtheusSource(config.source)
            try:
                for group in source.customers_titles(layout.selection, datasets.AS_OF):
                    plan_letter(group, layout, datasets.AS_OF, None, ())
            finally:
                source.close()

    elif stage == "render":
        templates = load_templates(
            make_environment(config.templates_dir), layout.template, layout.subject
        )

        def target() -> None:
            for letter in letters:
                compose(templates, letter, layout, config.creditor, "<x@credora.example>")

    else:

        def target() -> None:
            store = HistoryStore(history_url)
            try:
                run_id = store.start_run(layout.name, datasets.AS_OF, "manual", "bench")
                by_key = {(x.customer.code, x.customer.store): x for x in letters}
                for start in range(0, len(letters), PLAN_BATCH):
                    store.record_plans(run_id, [
                        PlanEntry(x, new_message_id(config.delivery), "outbox",
                                  LetterStatus.PLANNED)
                        for x in letters[start : start + PLAN_BATCH]
                    ])  # fmt: skip
                while batch := store.claim_batch(layout.name, datasets.AS_OF, 200):
                    outcome = LetterOutcome(LetterStatus.SENT, sent_at=datetime.now(UTC))
                    store.finish_letters([
                        LetterFinish(c.id, outcome, subject="Aviso", raw_message="x" * 39_000,
                                     titles=by_key[(c.customer_code, c.customer_store)].titles)
                        for c in batch
                    ])  # fmt: skip
            finally:
                store.close()

    profiler = Profiler(interval=0.001)
    profiler.start()
    target()
    profiler.stop()
    return profiler.output_text(unicode=True, color=False, show_all=False), profiler.output_html()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", choices=("breakdown", "source", "render", "history", "statements"))
    parser.add_argument("--size", default="100k")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sample", type=int, default=500, help="letters (not for source)")
    parser.add_argument(
        "--claim-size",
        type=int,
        help="breakdown: letters per claim (default: the outbox's batch; SMTP claims 1)",
    )
    parser.add_argument(
        "--layouts",
        choices=("wide", "ladder"),
        default="wide",
        help="statements: the bench's one wide layout or config/cobranca.yaml's four",
    )
    args = parser.parse_args(argv)
    if args.stage not in ("breakdown", "statements"):
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            parser.error("needs pyinstrument: .venv/bin/pip install pyinstrument")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"profile-{args.stage}-{args.backend}-{args.size}"
    with _environment(args.backend, args.size, args.layouts) as (config, history_url):
        if args.stage == "statements":
            found = statements(config)
            Path(f"{stem}.json").write_text(json.dumps(found, indent=2), encoding="utf-8")
            for row in found["texts_by_statement"][:10]:
                print(f"{row['texts']:5d}  {row['statement'][:100]}")
            print(
                f"{found['texts']} texts of {found['statements']} statements; "
                f"{found['letters_sent']} letters sent; SQLite's memory at most "
                f"{found['sqlite_memory_highwater_kib']} KiB; peak RSS "
                f"{found['peak_rss_kib'] // 1024} MB"
            )
            log(f"written {stem}.json")
            return 0
        letters = _sample(config, config.layouts[0], args.sample)
        if args.stage == "breakdown":
            result = breakdown(config, history_url, letters, args.claim_size)
            Path(f"{stem}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
            width = max(len(name) for name in result["ms_per_letter"])
            for name, ms in result["ms_per_letter"].items():
                print(f"{name.ljust(width)}  {ms:7.2f} ms/letter")
            print(
                f"{'sum'.ljust(width)}  {result['sum_ms_per_letter']:7.2f} ms/letter "
                f"({result['letters']} letters)"
            )
            log(f"written {stem}.json")
            return 0
        text, html = _profile(args.stage, config, history_url, letters)
    Path(f"{stem}.txt").write_text(text, encoding="utf-8")
    Path(f"{stem}.html").write_text(html, encoding="utf-8")
    print(text)
    log(f"written {stem}.txt and .html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
