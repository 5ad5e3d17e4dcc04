"""Letters claimed, written and recorded in batches (the outbox), and the history's batch writes.

A transport that can prove after a crash what it delivered (the outbox's files) lets the runner
claim a batch, write every file, make them durable together, then record the whole batch in one
transaction. These tests hold it to what one-by-one delivery promised: a letter not tried goes
back to planned untouched, a batch that could not be made durable is recorded as not sent, the
audit chain verifies, and several processes on one PostgreSQL history send each letter once.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, inspect, make_url, select, text
from sqlalchemy.dialects import postgresql

from cobranca.config import Delivery, load_config
from cobranca.demo import write_demo_database
from cobranca.history import (
    SUPERSEDED_INDEXES,
    HistoryStore,
    LetterFinish,
    LetterOutcome,
    LetterRecord,
    LetterTitleRecord,
    PlanEntry,
    RecordedPlan,
    existing_letters_statement,
)
from cobranca.mail import build_message
from cobranca.models import Disposition, InlineImage, LetterStatus, RenderedLetter
from cobranca.plan import plan_letter
from cobranca.runner import run_layouts
from cobranca.source import ProtheusSource
from cobranca.transports import outbox as outbox_module
from conftest import (
    AS_OF,
    LAYOUTS,
    REPO,
    assert_audit_ok,
    config_data,
    customers_owed_an_email,
    insert_day_of_letters,
    three_senders_one_killed,
    write_config,
)

SP = ZoneInfo("America/Sao_Paulo")
FIRST_NOTICE = [layout for layout in LAYOUTS if layout["name"] == "primeiro-aviso"]


def _config_path(tmp_path: Path, source: str, *, batch: int = 200, history: str = "") -> Path:
    data = config_data(
        source_url=source,
        history_url=history or f"sqlite:///{tmp_path / 'h.db'}",
        outbox=tmp_path / "outbox",
        layouts=FIRST_NOTICE,
    )
    data["delivery"]["outbox"]["batch_size"] = batch
    return write_config(tmp_path / "c.yaml", data)


def _eml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def _letters(history_url: str) -> list[tuple[int, str, int, str, str]]:
    history = HistoryStore(history_url)
    try:
        return [(r.id, r.status, r.attempts, r.reason, r.message_id) for r in history.letters()]
    finally:
        history.close()


# --- the runner ----------------------------------------------------------------------------


def test_window_closing_mid_batch_puts_the_untried_letters_back_untouched(
    demo_sqlite: str, tmp_path: Path
) -> None:
    data = config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                       outbox=tmp_path / "outbox", layouts=FIRST_NOTICE)  # fmt: skip
    data["calendar"] = {}  # the defaults: business days, 08:00–18:00
    config = load_config(write_config(tmp_path / "c.yaml", data))
    clock = iter([datetime(2026, 12, 4, 17, 59, tzinfo=SP)] * 4)

    def now() -> datetime:  # the run's check, then three letters; then the window closes
        return next(clock, datetime(2026, 12, 4, 18, 0, tzinfo=SP))

    result = run_layouts(config, as_of=AS_OF, now=now).results[0]

    assert result.sent == 3
    assert "outside the send window" in result.window_closed
    assert len(_eml_files(tmp_path / "outbox")) == 3
    letters = _letters(config.history.engine_url())
    planned = [letter for letter in letters if letter[1] == LetterStatus.PLANNED]
    assert len(planned) == result.left_planned > 0
    # Claimed with the batch but never tried: not an attempt, and the reason says why.
    assert all(attempts == 0 for _, _, attempts, _, _ in planned)
    assert all("outside the send window" in reason for _, _, _, reason, _ in planned)
    assert not list((tmp_path / "outbox").glob(".tmp-*")), "no temporary file left behind"
    assert_audit_ok(config.history.engine_url())

    later = run_layouts(config, as_of=AS_OF, ignore_calendar=True).results[0]
    assert later.sent == len(planned)
    files = _eml_files(tmp_path / "outbox")
    assert len(files) == result.sent + later.sent
    assert {f.stem for f in files} == {
        outbox_module.OutboxTransport(tmp_path / "outbox").path_for(mid).stem
        for _, status, _, _, mid in _letters(config.history.engine_url())
        if status == LetterStatus.SENT
    }


def test_a_batch_that_cannot_be_made_final_is_recorded_not_sent_and_sent_next_run(
    demo_sqlite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(_config_path(tmp_path, demo_sqlite, batch=5))
    real_replace = os.replace
    renames = 0

    def replace_failing_from_the_seventh(source: str, target: str) -> None:
        nonlocal renames
        renames += 1
        if renames >= 7:  # the disk fills up in the middle of the second batch
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(source, target)

    monkeypatch.setattr(outbox_module.os, "replace", replace_failing_from_the_seventh)
    first = run_layouts(config, as_of=AS_OF).results[0]
    monkeypatch.undo()

    # The first batch and one letter of the second were renamed into place; the other four
    # are recorded as not sent, and the layout stops: the rest stay planned.
    assert (first.sent, first.failed) == (6, 4)
    assert "cannot finish writing to outbox" in first.error
    assert all("cannot finish writing to outbox" in why for _, why in first.failures.entries)
    assert first.left_planned > 0
    assert len(_eml_files(tmp_path / "outbox")) == 6
    assert not list((tmp_path / "outbox").glob(".tmp-*"))
    statuses = Counter(status for _, status, _, _, _ in _letters(config.history.engine_url()))
    assert (statuses["sent"], statuses["failed_temporary"]) == (6, 4)
    assert statuses["planned"] == first.left_planned

    second = run_layouts(config, as_of=AS_OF).results[0]
    assert second.sent == 4 + first.left_planned
    # The four that failed are planned again; those left planned are carried over, not skipped.
    assert (second.planned, second.carried_over) == (4, first.left_planned)
    assert second.skipped["already_claimed"] == 6 + first.print_needed
    files = _eml_files(tmp_path / "outbox")
    assert len(files) == 6 + second.sent
    ids = [str(message_from_bytes(f.read_bytes())["Message-ID"]).strip() for f in files]
    assert len(set(ids)) == len(ids)
    assert_audit_ok(config.history.engine_url())


# --- the history's batch writes ----------------------------------------------------------------


def _planned_letters(config_path: Path) -> list:
    config = load_config(config_path)
    layout = config.layouts[0]
    source = ProtheusSource(config.source)
    try:
        letters = [
            plan_letter(group, layout, AS_OF, None)
            for group in source.customers_titles(layout.selection, AS_OF)
        ]
    finally:
        source.close()
    return [letter for letter in letters if letter.disposition is Disposition.SEND]


def _history_with_letters(demo_sqlite: str, tmp_path: Path) -> tuple[str, HistoryStore, list]:
    """A fresh history store (its URL) and the demo's letters to plan in it."""
    path = _config_path(tmp_path, demo_sqlite)
    letters = _planned_letters(path)
    assert len(letters) >= 4
    url = load_config(path).history.engine_url()
    return url, HistoryStore(url), letters


def test_record_plans_keeps_existing_letters_and_plans_failed_ones_again(
    demo_sqlite: str, tmp_path: Path
) -> None:
    url, history, letters = _history_with_letters(demo_sqlite, tmp_path)
    try:
        run_id = history.start_run("primeiro-aviso", AS_OF, "manual", "test")

        def entry(letter: object, n: int) -> PlanEntry:
            return PlanEntry(letter, f"<{n}@test>", "outbox", LetterStatus.PLANNED)  # type: ignore[arg-type]

        first = history.record_plans(run_id, [entry(x, n) for n, x in enumerate(letters[:3])])
        assert all(r.recorded and r.status is LetterStatus.PLANNED for r in first)
        sent, failed, waiting = (r.letter_id for r in first)
        claimed = {c.id for c in history.claim_batch("primeiro-aviso", AS_OF, 2)}
        assert claimed == {sent, failed}  # the third is left planned, as by max_letters_per_run
        history.finish_letters([
            LetterFinish(sent, LetterOutcome(LetterStatus.SENT, sent_at=datetime.now(SP))),
            LetterFinish(failed, LetterOutcome(LetterStatus.FAILED_TEMPORARY, "421 busy")),
        ])  # fmt: skip

        again = history.record_plans(run_id, [entry(x, 10 + n) for n, x in enumerate(letters)])

        # Today's letter went out: no second one, and the caller learns it was sent.
        assert again[0] == RecordedPlan(sent, False, LetterStatus.SENT)
        assert again[1] == RecordedPlan(failed, True, LetterStatus.PLANNED)  # the same row
        # Still planned from before: left as it is, and said so (the run sends it, not skips).
        assert again[2] == RecordedPlan(waiting, False, LetterStatus.PLANNED)
        new = again[3:]
        assert all(r.recorded for r in new)
        assert len({r.letter_id for r in new} | {sent, failed, waiting}) == len(letters)
        by_id = {letter_id: status for letter_id, status, _, _, _ in _letters(url)}
        assert by_id[sent] == "sent" and by_id[failed] == "planned"
        assert len(history.events(waiting)) == 1  # nothing recorded on it the second time
        events = [e.reason for e in history.events(failed)]
        assert events[-1].startswith("planned again")
    finally:
        history.close()
    assert_audit_ok(url)


def test_a_failed_letter_another_process_plans_again_first_is_reported_as_found(
    demo_sqlite: str, tmp_path: Path
) -> None:
    url, history, letters = _history_with_letters(demo_sqlite, tmp_path)
    try:
        run_id = history.start_run("primeiro-aviso", AS_OF, "manual", "test")
        entry = PlanEntry(letters[0], "<1@test>", "outbox", LetterStatus.PLANNED)
        (failed,) = (r.letter_id for r in history.record_plans(run_id, [entry]))
        history.claim_batch("primeiro-aviso", AS_OF, 1)
        history.finish_letters([LetterFinish(failed, LetterOutcome(LetterStatus.FAILED_TEMPORARY,
                                                                   "421 busy"))])  # fmt: skip

        changed: list[int] = []

        def other_process_plans_it_again(_c: object, _k: object, statement: str,
                                         *_: object) -> None:  # fmt: skip
            if statement.startswith("UPDATE cobranca_letters") and not changed:
                other = create_engine(url)  # between the look-up and the update
                with other.begin() as connection:
                    connection.execute(
                        text("UPDATE cobranca_letters SET status = 'planned' WHERE id = :id"),
                        {"id": failed},
                    )
                other.dispose()
                changed.append(failed)

        event.listen(history.engine, "before_cursor_execute", other_process_plans_it_again)
        again = history.record_plans(run_id, [replace(entry, message_id="<2@test>")])
    finally:
        history.close()
    assert changed  # the other process did change it in between
    # Not planned twice, and not taken for a letter that went: the other run sends it.
    assert again == [RecordedPlan(failed, False, LetterStatus.PLANNED)]


def test_record_plans_inserts_a_batch_in_one_statement_and_gives_each_letter_its_own_id(
    demo_sqlite: str, tmp_path: Path
) -> None:
    url, history, letters = _history_with_letters(demo_sqlite, tmp_path)
    inserts: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO cobranca_letters "):
            inserts.append(statement)

    event.listen(history.engine, "before_cursor_execute", count)
    try:
        run_id = history.start_run("primeiro-aviso", AS_OF, "manual", "test")
        entries = [
            PlanEntry(letter, f"<{n}@test>", "outbox", LetterStatus.PLANNED)
            for n, letter in enumerate(letters)
        ]
        ids = [r.letter_id for r in history.record_plans(run_id, entries)]
    finally:
        event.remove(history.engine, "before_cursor_execute", count)
        history.close()
    assert len(inserts) == 1  # SQLite inserted row by row when the ids came back in order
    assert len(set(ids)) == len(letters)
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(select(LetterRecord.id, LetterRecord.message_id)).all()
    engine.dispose()
    stored = dict(rows)
    assert [stored[letter_id] for letter_id in ids] == [entry.message_id for entry in entries]


def _look_up_and_explain(
    url: str, letters: int, explain: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[Any]]:
    """Planning's look-up of 50 customers in a day of ``letters`` letters, after three days
    of letters to the same customers: the customers wanted, those found, and the rows of
    ``explain`` (the database's EXPLAIN) for it."""
    history = HistoryStore(url)
    try:
        for weeks in (3, 2, 1):  # the same customers' earlier letters
            insert_day_of_letters(history, letters, as_of=AS_OF - timedelta(weeks=weeks))
        customers = insert_day_of_letters(history, letters)
        wanted = customers[letters // 3 : letters // 3 + 50]
        statement, params = existing_letters_statement("primeiro-aviso", AS_OF, wanted)
        with history.engine.connect() as connection:
            found = sorted(
                (code, store) for _, code, store, _ in connection.execute(statement, params)
            )
            compiled = statement.params(params).compile(
                dialect=history.engine.dialect, compile_kwargs={"literal_binds": True}
            )
            explained = connection.exec_driver_sql(f"{explain} {compiled}").all()
    finally:
        history.close()
    return wanted, found, list(explained)


def _plan_steps(node: dict) -> list[dict]:
    """A PostgreSQL JSON plan's node and all the nodes under it."""
    return [node] + [step for child in node.get("Plans", []) for step in _plan_steps(child)]


def _assert_reads_only_the_letters_it_finds(plan: dict, letters: int) -> None:
    """Letters read through an index (the unique key, or the customer index where
    PostgreSQL finds it as good), each one the look-up asked for: neither the day's other
    letters nor the customers' earlier ones are visited (the IN look-up of an earlier release
    removed them one by one, with a filter)."""
    steps = _plan_steps(plan)
    assert plan["Actual Rows"] == letters, steps
    scans = {step["Node Type"] for step in steps if "Relation Name" in step}
    assert scans <= {"Index Scan", "Index Only Scan"}, steps
    assert sum(step.get("Rows Removed by Filter", 0) for step in steps) == 0, steps
    assert sum(step.get("Rows Removed by Index Recheck", 0) for step in steps) == 0, steps


def test_plan_lookup_probes_the_unique_key_instead_of_scanning_the_days_queue_sqlite(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    wanted, found, explained = _look_up_and_explain(url, 2_000, "EXPLAIN QUERY PLAN")
    assert found == wanted
    searches = [row[3] for row in explained if row[3].startswith("SEARCH")]
    # One probe of the unique key (layout, customer, store, day) per customer, nothing else.
    assert len(searches) == len(wanted), explained
    assert all(
        "sqlite_autoindex_cobranca_letters" in step
        and "(layout=? AND customer_code=? AND customer_store=? AND as_of=?)" in step
        for step in searches
    ), explained


@pytest.mark.postgres
def test_plan_lookup_reads_only_the_letters_it_finds_postgresql(
    postgres_url: Callable[[], str],
) -> None:
    explain = "EXPLAIN (ANALYZE, FORMAT JSON)"
    wanted, found, [[plan]] = _look_up_and_explain(postgres_url(), 5_000, explain)
    assert found == wanted

    _assert_reads_only_the_letters_it_finds(plan[0]["Plan"], len(wanted))


def test_plan_lookup_is_built_once_per_batch_size(tmp_path: Path) -> None:
    """Each batch binds its customers to the same statement (bench/: building it was a fifth
    of the plan), and each gets its own letters."""
    history = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        customers = insert_day_of_letters(history, 200)
        first, second = customers[:50], customers[100:150]
        statement, first_params = existing_letters_statement("primeiro-aviso", AS_OF, first)
        same, second_params = existing_letters_statement("primeiro-aviso", AS_OF, second)
        assert same is statement
        with history.engine.connect() as connection:
            for wanted, params in ((first, first_params), (second, second_params)):
                rows = connection.execute(statement, params).all()
                assert sorted((code, store) for _, code, store, _ in rows) == wanted
    finally:
        history.close()


@pytest.mark.postgres
def test_plan_lookup_prepared_once_still_reads_only_the_letters_it_finds_postgresql(
    postgres_url: Callable[[], str],
) -> None:
    """The look-up's text is the same for every batch, so psycopg prepares it and PostgreSQL
    may plan it once for any values (a generic plan): that plan probes an index too."""
    history = HistoryStore(postgres_url())
    try:
        for weeks in (3, 2, 1):  # the same customers' earlier letters
            insert_day_of_letters(history, 5_000, as_of=AS_OF - timedelta(weeks=weeks))
        customers = insert_day_of_letters(history, 5_000)
        wanted = customers[2_000:2_050]
        statement, params = existing_letters_statement("primeiro-aviso", AS_OF, wanted)
        compiled = statement.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))
        values = ", ".join(f"'{params[name]}'" for name in compiled.positiontup or ())
        with history.engine.connect() as connection:
            connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            connection.exec_driver_sql(f"PREPARE look_up AS {compiled}")
            [[plan]] = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE look_up({values})"
            ).all()
    finally:
        history.close()

    _assert_reads_only_the_letters_it_finds(plan[0]["Plan"], len(wanted))


def test_a_history_from_an_earlier_release_gets_todays_indexes_and_loses_superseded_ones(
    tmp_path: Path,
) -> None:
    """ix_letter_queue made planning quadratic; ix_letter_customer came later, for
    `history list --customer`."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    HistoryStore(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:  # as earlier releases made it
        connection.execute(text("DROP INDEX ix_letter_status_queue"))
        connection.execute(text("DROP INDEX ix_letter_customer"))
        connection.execute(text(
            "CREATE INDEX ix_letter_queue ON cobranca_letters (layout, as_of, status, id)"
        ))  # fmt: skip

    history = HistoryStore(url)
    try:
        customers = insert_day_of_letters(history, 300)
        statement, params = existing_letters_statement("primeiro-aviso", AS_OF, customers[:10])
        with history.engine.connect() as connection:
            assert len(connection.execute(statement, params).all()) == 10
    finally:
        history.close()
    indexes = {index["name"] for index in inspect(engine).get_indexes("cobranca_letters")}
    engine.dispose()
    assert not indexes & set(SUPERSEDED_INDEXES)
    assert {"ix_letter_status_queue", "ix_letter_customer"} <= indexes


_COMPRESSION = text(
    "SELECT attcompression FROM pg_attribute "
    "WHERE attrelid = 'cobranca_letters'::regclass AND attname = 'raw_message'"
)


def _opened_with_statements(url: str) -> list[str]:
    """Open (and close) a history on ``url``; the statements that took."""
    engine = create_engine(url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    HistoryStore(url, engine=engine).close()
    return statements


@pytest.mark.postgres
def test_stored_messages_are_compressed_with_lz4_on_postgresql(
    postgres_url: Callable[[], str],
) -> None:
    url = postgres_url()
    history = HistoryStore(url)
    customers = insert_day_of_letters(history, 1)
    history.close()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            assert connection.scalar(_COMPRESSION) == "l"
            connection.execute(text(  # a ~60 KB message, as stored when a letter is sent
                "UPDATE cobranca_letters SET raw_message = repeat('Prezado cliente, ', 3500) "
                "WHERE customer_code = :code"
            ), {"code": customers[0][0]})  # fmt: skip
            stored = connection.scalar(text(
                "SELECT pg_column_compression(raw_message) FROM cobranca_letters"
            ))  # fmt: skip
            assert stored == "lz4"
            # A history made by an earlier release is switched when opened, once.
            connection.execute(text(
                "ALTER TABLE cobranca_letters ALTER COLUMN raw_message SET COMPRESSION pglz"
            ))  # fmt: skip
        altered = [s for s in _opened_with_statements(url) if s.startswith("ALTER")]
        assert altered == [
            "ALTER TABLE cobranca_letters ALTER COLUMN raw_message SET COMPRESSION lz4"
        ]
        assert not [s for s in _opened_with_statements(url) if s.startswith("ALTER")]
        with engine.connect() as connection:
            assert connection.scalar(_COMPRESSION) == "l"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_role_that_may_not_alter_the_history_still_opens_it(
    postgres_url: Callable[[], str],
) -> None:
    """An auditor's read-only role opens a history the switch to lz4 has not reached."""
    url = postgres_url()
    HistoryStore(url).close()
    role = f"cobranca_reader_{os.getpid()}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(
                "ALTER TABLE cobranca_letters ALTER COLUMN raw_message SET COMPRESSION pglz"
            ))  # fmt: skip
            connection.execute(text(f"CREATE ROLE {role} LOGIN"))
            connection.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        reader_url = make_url(url).set(username=role)
        HistoryStore(reader_url).close()
        with engine.connect() as connection:
            assert connection.scalar(_COMPRESSION) == "p"
    finally:
        with engine.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        engine.dispose()


def test_finish_letters_rewrites_only_the_titulo_lists_that_changed(
    demo_sqlite: str, tmp_path: Path
) -> None:
    path = _config_path(tmp_path, demo_sqlite)
    letters = [x for x in _planned_letters(path) if len(x.titles) >= 2][:2]
    assert len(letters) == 2
    url = load_config(path).history.engine_url()
    history = HistoryStore(url)
    try:
        run_id = history.start_run("primeiro-aviso", AS_OF, "manual", "test")
        entries = [
            PlanEntry(x, f"<{n}@test>", "outbox", LetterStatus.PLANNED)
            for n, x in enumerate(letters)
        ]
        same, shorter = (r.letter_id for r in history.record_plans(run_id, entries))
        history.claim_batch("primeiro-aviso", AS_OF, 10)

        def title_keys(letter_id: int) -> list[str]:
            with history.engine.connect() as connection:
                return list(
                    connection.scalars(
                        select(LetterTitleRecord.title_key)
                        .where(LetterTitleRecord.letter_id == letter_id)
                        .order_by(LetterTitleRecord.id)
                    )
                )

        deletes: list[object] = []

        def watch(_conn: object, _cursor: object, statement: str, parameters: object,
                  *_: object) -> None:  # fmt: skip
            if statement.startswith("DELETE FROM cobranca_letter_titles"):
                deletes.append(parameters)

        event.listen(history.engine, "before_cursor_execute", watch)
        before_same, before_shorter = title_keys(same), title_keys(shorter)
        outcome = LetterOutcome(LetterStatus.SENT, sent_at=datetime.now(SP))
        history.finish_letters([
            LetterFinish(same, outcome, subject="s", titles=letters[0].titles, raw_message="m1"),
            LetterFinish(shorter, outcome, subject="s", titles=letters[1].titles[1:],
                         raw_message="m2"),
        ])  # fmt: skip
        event.remove(history.engine, "before_cursor_execute", watch)

        assert title_keys(same) == before_same
        assert title_keys(shorter) == before_shorter[1:]
        # Only the changed list was deleted and written again.
        assert deletes == [(shorter,)], deletes
        record = history.letter(shorter)
        assert record is not None
        assert record.total == sum(t.net_balance for t in letters[1].titles[1:])
    finally:
        history.close()
    assert_audit_ok(url)


_IN_LIST = re.compile(r"\((?:\?|%\(\w+\)s)(?:, (?:\?|%\(\w+\)s))*\)")


def test_batches_of_every_size_send_a_few_statement_texts(tmp_path: Path) -> None:
    """Each length of an IN list is another SQL text, which SQLite prepares and keeps (128 a
    connection): batches of 1 to 9 letters must not make nine texts of each statement."""
    erp = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(erp, customers=250, seed=7, as_of=AS_OF)
    url, history, letters = _history_with_letters(erp, tmp_path)
    texts: dict[str, set[str]] = {}

    def watch(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        texts.setdefault(_IN_LIST.sub("(…)", statement), set()).add(statement)

    try:
        run_id = history.start_run("primeiro-aviso", AS_OF, "manual", "test")
        history.record_plans(run_id, [
            PlanEntry(x, f"<{n}@test>", "outbox", LetterStatus.PLANNED)
            for n, x in enumerate(letters)
        ])  # fmt: skip
        by_customer = {(x.customer.code, x.customer.store): x for x in letters}
        event.listen(history.engine, "before_cursor_execute", watch)
        sizes = [size for size in range(1, 10) if sum(range(1, size + 1)) <= len(letters)]
        assert sizes == list(range(1, 10)), f"{len(letters)} letters: too few for every size"
        for size in sizes:
            batch = history.claim_batch("primeiro-aviso", AS_OF, size)
            assert len(batch) == size
            history.suspensions(AS_OF, 3, [c.customer_code for c in batch])
            outcome = LetterOutcome(LetterStatus.SENT, sent_at=datetime.now(SP))
            history.finish_letters([
                LetterFinish(c.id, outcome, subject="s", raw_message="m",
                             titles=by_customer[c.customer_code, c.customer_store].titles[1:])
                for c in batch
            ])  # fmt: skip
    finally:
        event.remove(history.engine, "before_cursor_execute", watch)
        history.close()
    with_lists = {shape: len(found) for shape, found in texts.items() if "(…)" in shape}
    assert len(with_lists) >= 5  # claim, its títulos, the suspensions, títulos rewritten...
    # Lengths 1 to 9 padded to 1, 2, 4, 8 and 16: five texts at most of each statement.
    assert max(with_lists.values()) <= 5, with_lists
    assert_audit_ok(url)


# --- the message --------------------------------------------------------------------------------

# Lines of any text, with what is special in MIME bodies: dots and "From " at line starts,
# "=" and "--", trailing blanks, long lines.
LINE = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"),
            max_size=40)
    | st.sampled_from([" ", "\t", ".", "=", "=_", "--", "From ", "=\u00e9="]),
    max_size=6,
).map("".join)  # fmt: skip
LINES = st.lists(LINE, max_size=12).map("\n".join)


@functools.cache
def _delivery(folder: Path) -> Delivery:
    return load_config(_config_path(folder, "sqlite:///unused.db")).delivery


@settings(max_examples=60, deadline=None)
@given(text=LINES, html=LINES, image=st.binary(min_size=1, max_size=600))
def test_message_bodies_come_back_exactly_and_every_line_is_short(
    text: str, html: str, image: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    delivery = _delivery(tmp_path_factory.getbasetemp())
    rendered = RenderedLetter(subject="Aviso – São Paulo", html=html, text=text)
    pix = InlineImage(content_id="pix.1@credora.example", content=image, filename="pix.png")
    message = build_message(
        rendered, ["a@example.com", "b@example.com"], delivery, "<x.1@credora.example>",
        datetime(2026, 12, 4, 9, 0, tzinfo=SP), "primeiro-aviso",
        [("carta.pdf", b"%PDF-1.4 " + image)], [pix],
    )  # fmt: skip

    assert all(len(line) <= 78 for line in message.data.split(b"\r\n"))
    assert b"\n" not in message.data.replace(b"\r\n", b"")  # CRLF line ends only
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert all(not part.defects for part in parsed.walk())
    assert parsed["To"] == "a@example.com, b@example.com"
    for subtype, sent in (("plain", text), ("html", html)):
        body = parsed.get_body((subtype,))
        assert body is not None
        assert body.get_content().replace("\r\n", "\n") == sent
    inline = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    assert [p.get_content() for p in inline] == [image]
    assert inline[0]["Content-ID"] == "<pix.1@credora.example>"
    pdfs = [p.get_content() for p in parsed.iter_attachments()]
    assert pdfs == [b"%PDF-1.4 " + image]


# --- several processes on one PostgreSQL history ----------------------------------------------


@pytest.mark.postgres
def test_three_outbox_senders_one_killed_each_letter_written_once(
    postgres_url: Callable[[], str], tmp_path: Path
) -> None:
    history_url = postgres_url()
    source_url = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(source_url, customers=600, seed=3, as_of=AS_OF)
    path = _config_path(tmp_path, source_url, batch=5, history=history_url)
    owed = customers_owed_an_email(path, AS_OF)
    assert len(owed) > 100
    command = [sys.executable, "-m", "cobranca", "run", "--config", str(path),
               "--as-of", AS_OF.isoformat(), "--format", "json"]  # fmt: skip
    outbox = tmp_path / "outbox"

    def twenty_files() -> None:
        deadline = time.monotonic() + 120
        while len(_eml_files(outbox)) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)

    _, survivors = three_senders_one_killed(command, twenty_files)
    for code, out, err in survivors:
        assert code in (0, 1) and b"Traceback" not in err, err.decode()
        json.loads(out)
    # The next run settles the killed sender's batch from its files and sends what it left.
    recovery = subprocess.run(command, capture_output=True, cwd=REPO, timeout=180)
    assert recovery.returncode == 0, recovery.stderr.decode()

    engine = create_engine(history_url)
    try:
        with engine.connect() as connection:
            rows = list(connection.execute(text(
                "SELECT customer_code || '/' || customer_store, status, message_id "
                "FROM cobranca_letters WHERE transport = 'outbox'"
            )))  # fmt: skip
    finally:
        engine.dispose()
    assert sorted(who for who, _, _ in rows) == sorted(owed)
    assert Counter(status for _, status, _ in rows) == {"sent": len(owed)}, "none in doubt"
    written = Counter(
        str(message_from_bytes(f.read_bytes())["Message-ID"]).strip() for f in _eml_files(outbox)
    )
    assert set(written) == {message_id for _, _, message_id in rows}
    assert set(written.values()) == {1}
    assert_audit_ok(history_url)


@pytest.mark.parametrize("host", ["this", "another"])
def test_an_outbox_letter_a_dead_sender_left_is_planned_again_only_from_its_own_host(
    demo_sqlite: str, tmp_path: Path, host: str
) -> None:
    """The outbox's missing file proves a letter was not delivered only on the host that was
    writing it: another host's sender wrote to its own outbox folder, perhaps not this one."""
    path = _config_path(tmp_path, demo_sqlite)
    config = load_config(path)
    url, history, letters = _history_with_letters(demo_sqlite, tmp_path)
    try:
        run_id = history.start_run("primeiro-aviso", AS_OF, "manual", "test")
        entry = PlanEntry(letters[0], "<dead@test>", "outbox", LetterStatus.PLANNED)
        (letter_id,) = (r.letter_id for r in history.record_plans(run_id, [entry]))
        assert [c.id for c in history.claim_batch("primeiro-aviso", AS_OF, 1)] == [letter_id]
        holder = f"{socket.gethostname() if host == 'this' else 'elsewhere'}:999999999:1"
        with history.engine.begin() as connection:  # its sender died, long ago
            connection.execute(
                text("UPDATE cobranca_letters SET holder = :holder, claimed_at = :long_ago"),
                {"holder": holder, "long_ago": "2026-12-01 12:00:00.000000"},
            )
    finally:
        history.close()

    report = run_layouts(config, ["primeiro-aviso"], as_of=AS_OF)

    its_file = outbox_module.OutboxTransport(tmp_path / "outbox").path_for("<dead@test>")
    if host == "this":  # no file: certainly not delivered, so it goes now
        assert report.recovered == [(letter_id, "planned")]
        assert its_file.exists()
    else:  # perhaps in the other host's outbox: a person decides
        assert report.recovered == [(letter_id, "ambiguous")]
        assert not its_file.exists()
    assert_audit_ok(url)
