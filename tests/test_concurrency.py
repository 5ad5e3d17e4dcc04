"""Several `cobranca run` processes at once on one history: every letter goes out exactly once.

The processes plan the same customers (the history's unique key lets one record each letter)
and deliver from the same planned letters (the atomic claim lets one send each). They share one
aiosmtpd server in this process, which counts what it receives by Message-ID.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from cobranca.demo import write_demo_database
from cobranca.history import Base, HistoryStore
from conftest import (
    AS_OF,
    REPO,
    SmtpServer,
    assert_audit_ok,
    config_data,
    customers_owed_an_email,
    write_config,
)

WIDE_LAYOUT = [
    {
        "name": "todos-vencidos",
        "schedule": "0 9 * * mon-fri",
        "template": "primeiro-aviso",
        "subject": "Aviso – {{ customer.name }}",
        "selection": {"days": {"min": 1}},
    }
]
CUSTOMERS = 150


def _setup(tmp_path: Path, smtp: SmtpServer, history_url: str) -> tuple[Path, set[str]]:
    """The demo source, a config on the given history, and the customers owed an e-mail."""
    source_url = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(source_url, customers=CUSTOMERS, seed=3, as_of=AS_OF)
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=source_url, history_url=history_url, smtp=smtp,
                    layouts=WIDE_LAYOUT),
    )  # fmt: skip
    to_send = customers_owed_an_email(path, AS_OF)
    assert len(to_send) > 100
    return path, to_send


def _run_together(path: Path, count: int) -> list[tuple[int, str, str]]:
    """Start `count` runs back to back, wait for all: (exit code, stdout, stderr) of each."""
    command = [sys.executable, "-m", "cobranca", "run", "--config", str(path),
               "--as-of", AS_OF.isoformat(), "--format", "json"]  # fmt: skip
    processes = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for _ in range(count)
    ]
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append((process.returncode, out.decode(), err.decode()))
    return results


def _rows(history_url: str, query: str) -> list[Any]:
    engine = create_engine(history_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(query)))
    finally:
        engine.dispose()


def _assert_exactly_once(
    history_url: str, smtp: SmtpServer, to_send: set[str], results: list[tuple[int, str, str]]
) -> None:
    sent_by_process = []
    for code, out, err in results:
        assert code in (0, 1), err
        assert "Traceback" not in err, err
        summary = json.loads(out)
        sent_by_process.append(sum(layout["sent"] for layout in summary["layouts"]))

    received = Counter(str(m.message["Message-ID"]).strip() for m in smtp.received)
    twice = {mid: n for mid, n in received.items() if n > 1}
    assert not twice, f"received more than once: {twice}"
    assert len(received) == len(to_send)
    assert sum(sent_by_process) == len(received), sent_by_process  # each counted by its sender

    duplicates = _rows(history_url, """
        SELECT layout, customer_code, customer_store, as_of, count(*) FROM cobranca_letters
        GROUP BY layout, customer_code, customer_store, as_of HAVING count(*) > 1
    """)  # fmt: skip
    assert duplicates == []
    letters = _rows(history_url, """
        SELECT customer_code, customer_store, status, message_id FROM cobranca_letters
        WHERE transport = 'smtp'
    """)  # fmt: skip
    assert {f"{code}/{store}" for code, store, _, _ in letters} == to_send
    assert {status for _, _, status, _ in letters} == {"sent"}
    assert {mid for _, _, _, mid in letters} == set(received)
    # Each letter was claimed once: one 'sending' event, one 'sent' event.
    claims = _rows(history_url, """
        SELECT e.letter_id, count(*) FROM cobranca_events e
        JOIN cobranca_letters l ON l.id = e.letter_id
        WHERE l.transport = 'smtp' AND e.status IN ('sending', 'sent')
        GROUP BY e.letter_id
    """)  # fmt: skip
    assert len(claims) == len(to_send) and {n for _, n in claims} == {2}
    # Processes appending at once never fork the audit chain.
    assert_audit_ok(history_url)


@pytest.mark.postgres
@pytest.mark.parametrize("processes", [2, 3])
def test_runs_at_once_on_a_postgresql_history_send_each_letter_once(
    processes: int,
    postgres_url: Callable[[], str],
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    history_url = postgres_url()
    path, to_send = _setup(tmp_path, smtp_server, history_url)
    results = _run_together(path, processes)
    _assert_exactly_once(history_url, smtp_server, to_send, results)


def test_two_runs_at_once_on_a_sqlite_history_send_each_letter_once(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    path, to_send = _setup(tmp_path, smtp_server, history_url)
    results = _run_together(path, 2)
    _assert_exactly_once(history_url, smtp_server, to_send, results)


@pytest.mark.postgres
def test_history_store_opens_while_another_process_creates_the_schema(
    postgres_url: Callable[[], str],
) -> None:
    """Two daemons' first runs on an empty history: one creates the tables between the other's
    check for them and its CREATE TABLE (forced here; it happened in 1 of 3 three-process
    runs before HistoryStore retried the schema creation)."""
    url = postgres_url()

    def other_process_creates_the_schema(*_: Any, **__: Any) -> None:
        other = create_engine(url)
        try:
            Base.metadata.create_all(other)
        finally:
            other.dispose()

    event.listen(Base.metadata, "before_create", other_process_creates_the_schema, once=True)
    try:
        history = HistoryStore(url)
    finally:
        if event.contains(Base.metadata, "before_create", other_process_creates_the_schema):
            event.remove(Base.metadata, "before_create", other_process_creates_the_schema)
    try:
        assert history.runs() == []  # the schema is there and usable
        assert history.start_run("todos-vencidos", AS_OF, "manual", "digest") == 1
    finally:
        history.close()


def test_a_new_sqlite_history_another_process_holds_is_waited_for_not_refused(
    tmp_path: Path,
) -> None:
    """Two senders started together on a new SQLite history: while one holds the new file
    (here a plain connection in the middle of a write, before the file is in WAL), turning it
    to WAL is refused at once, busy_timeout or not. It failed the bench's two-sender run with
    "database is locked" (9 of 30 tries of two processes opening a new history)."""
    path = tmp_path / "history.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE being_created (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO being_created VALUES (1)")
    released = threading.Timer(0.5, other.execute, ("COMMIT",))
    released.start()
    started = time.monotonic()
    try:
        history = HistoryStore(f"sqlite:///{path}")
    finally:
        released.join()
        other.close()
    try:
        assert time.monotonic() - started >= 0.4  # it waited for the other to finish
        assert history.start_run("todos-vencidos", AS_OF, "manual", "digest") == 1
        with history.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        history.close()
