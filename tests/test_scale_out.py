"""Several senders on one PostgreSQL history, and one of them killed mid-run.

Real processes (`cobranca run`, `cobranca daemon`), a real PostgreSQL history and one aiosmtpd
server counting what arrives by Message-ID. A sender is SIGKILLed while it delivers; what it
leaves must be finished by the others: every letter sent exactly once, and at most the one it
had in flight marked ambiguous, never sent again blindly.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from sqlalchemy import create_engine, text

from cobranca.demo import write_demo_database
from cobranca.history import HistoryStore
from cobranca.scheduler import Daemon
from conftest import (
    AS_OF,
    REPO,
    SmtpServer,
    config_data,
    customers_owed_an_email,
    three_senders_one_killed,
    write_config,
)

pytestmark = pytest.mark.postgres

LAYOUT = {
    "name": "todos-vencidos",
    "schedule": "0 0 * * *",  # midnight: a daemon started any time later catches today's run up
    "template": "primeiro-aviso",
    "subject": "Aviso – {{ customer.name }}",
    "selection": {"days": {"min": 1}},
}


def _setup(tmp_path: Path, smtp: SmtpServer, history_url: str, as_of: date) -> tuple[Path, set]:
    """A demo ERP, a config pacing each sender to 10 letters a second, and who is owed one."""
    source_url = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(source_url, customers=150, seed=3, as_of=as_of)
    data = config_data(source_url=source_url, history_url=history_url, smtp=smtp, layouts=[LAYOUT])
    data["delivery"]["rate_per_minute"] = 600
    data["delivery"]["claim_timeout_seconds"] = 60
    path = write_config(tmp_path / "c.yaml", data)
    owed = customers_owed_an_email(path, as_of)
    assert len(owed) > 100
    return path, owed


def _query(history_url: str, sql: str) -> list[Any]:
    engine = create_engine(history_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)))
    finally:
        engine.dispose()


def _count(history_url: str, status: str) -> int:
    rows = _query(history_url, f"SELECT count(*) FROM cobranca_letters WHERE status = '{status}'")
    return rows[0][0] if rows else 0


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _tables_exist(history_url: str) -> bool:
    rows = _query(history_url, "SELECT to_regclass('cobranca_letters') IS NOT NULL")
    return bool(rows[0][0])


def _assert_each_letter_once(
    history_url: str, smtp: SmtpServer, owed: set[str], killed_pid: int
) -> None:
    received = Counter(str(m.message["Message-ID"]).strip() for m in smtp.received)
    assert not {mid: n for mid, n in received.items() if n > 1}, "a letter arrived twice"
    letters = _query(history_url, """
        SELECT customer_code || '/' || customer_store, status, message_id, holder
        FROM cobranca_letters WHERE transport = 'smtp'
    """)  # fmt: skip
    assert sorted(who for who, _, _, _ in letters) == sorted(owed)  # one letter per customer
    statuses = Counter(status for _, status, _, _ in letters)
    assert set(statuses) <= {"sent", "ambiguous"}, statuses  # nothing left planned or sending
    ambiguous = [mid for _, status, mid, _ in letters if status == "ambiguous"]
    # Only the letter the killed sender had in flight may be in doubt; it is not resent.
    assert len(ambiguous) <= 1
    claimed_by = _query(history_url, """
        SELECT e.actor FROM cobranca_events e JOIN cobranca_letters l ON l.id = e.letter_id
        WHERE l.status = 'ambiguous' AND e.status = 'sending'
    """)  # fmt: skip
    assert all(f":{killed_pid}:" in actor for (actor,) in claimed_by), (claimed_by, killed_pid)
    sent = {mid for _, status, mid, _ in letters if status == "sent"}
    assert sent <= set(received)
    assert set(received) <= sent | set(ambiguous)
    claims = _query(history_url, """
        SELECT e.letter_id, count(*) FROM cobranca_events e
        JOIN cobranca_letters l ON l.id = e.letter_id
        WHERE l.status = 'sent' AND e.status = 'sending' GROUP BY e.letter_id
    """)  # fmt: skip
    assert {n for _, n in claims} == {1}  # each sent letter was claimed once


def test_three_senders_one_killed_mid_run_each_letter_once(
    postgres_url: Callable[[], str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    history_url = postgres_url()
    path, owed = _setup(tmp_path, smtp_server, history_url, AS_OF)
    command = [sys.executable, "-m", "cobranca", "run", "--config", str(path),
               "--as-of", AS_OF.isoformat(), "--format", "json"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def sent_fifteen() -> None:
        _wait_until(lambda: _tables_exist(history_url), "the history schema")
        _wait_until(lambda: _count(history_url, "sent") >= 15, "15 letters sent")

    victim, survivors = three_senders_one_killed(command, sent_fifteen, timeout=120, env=env)
    sent_by = []
    for code, out, err in survivors:
        assert code in (0, 1) and "Traceback" not in err.decode(), err.decode()
        sent_by.append(sum(layout["sent"] for layout in json.loads(out)["layouts"]))
    # The survivors shared the rest: both sent (SKIP LOCKED hands them different letters).
    assert all(sent_by), sent_by
    assert _count(history_url, "planned") == 0

    # The next run (here: by hand) settles the dead sender's letter in flight, if it had one.
    recovery = subprocess.run(command, capture_output=True, cwd=REPO, env=env, timeout=120)
    assert recovery.returncode in (0, 1), recovery.stderr.decode()
    _assert_each_letter_once(history_url, smtp_server, owed, victim)


def test_second_daemon_shares_the_run_and_takes_it_over_when_the_first_dies(
    postgres_url: Callable[[], str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    history_url = postgres_url()
    today = datetime.now(ZoneInfo("America/Sao_Paulo")).date()  # the daemon's day, not UTC's
    path, owed = _setup(tmp_path, smtp_server, history_url, today)
    first = subprocess.Popen(
        [sys.executable, "-m", "cobranca", "daemon", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    executed: queue.Queue[JobExecutionEvent] = queue.Queue()
    try:
        _wait_until(lambda: _tables_exist(history_url), "the history schema")
        _wait_until(lambda: _count(history_url, "sent") >= 5, "the first daemon sending")
        with time_machine.travel(datetime.now().astimezone(), tick=True) as clock:
            second = Daemon(path)
            second.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
            second.start()  # catches today's run up: it is the first daemon's, so it shares it
            try:
                sent_before = _count(history_url, "sent")
                _wait_until(lambda: _count(history_url, "sent") >= sent_before + 20, "sharing")
                first.send_signal(signal.SIGKILL)
                assert first.wait(timeout=10) == -signal.SIGKILL
                # The share ends when nothing is planned; a check-up is due after the timeout.
                assert executed.get(timeout=120).job_id == "todos-vencidos:catch-up"
                watch = second.scheduler.get_job("todos-vencidos:watch")
                assert watch is not None
                clock.move_to(watch.next_run_time + timedelta(seconds=1))
                second.scheduler.wakeup()
                assert executed.get(timeout=60).job_id == "todos-vencidos:watch"
            finally:
                second.stop()
    finally:
        if first.poll() is None:
            first.kill()

    history = HistoryStore(history_url)
    try:
        slot = history.slot("todos-vencidos", today)
        triggers = [run.trigger for run in history.runs()]
    finally:
        history.close()
    assert slot is not None and slot.status == "finished"
    assert f":{os.getpid()}:" in slot.holder  # taken over by the survivor
    assert triggers == ["scheduled", "shared", "scheduled"]
    _assert_each_letter_once(history_url, smtp_server, owed, first.pid)
