"""The real APScheduler fires each layout at its cron time; the clock is moved, not waited for."""

from __future__ import annotations

import gc
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from cobranca.history import HistoryStore
from cobranca.runner import LayoutResult, RunReport
from cobranca.scheduler import Daemon
from conftest import AS_OF, REPO, SmtpServer, config_data, offline_config_data, write_config

SP = ZoneInfo("America/Sao_Paulo")


def test_layout_fires_at_its_cron_time_and_sends(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    history_url = f"sqlite:///{tmp_path / 'h.db'}"
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=history_url, smtp=smtp_server),
    )
    executed: queue.Queue[JobExecutionEvent] = queue.Queue()
    # Friday 2026-12-04, ten seconds before the 09:00 first notice.
    with time_machine.travel(datetime(2026, 12, 4, 8, 59, 50, tzinfo=SP), tick=True) as clock:
        daemon = Daemon(path)
        daemon.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        daemon.start()
        try:
            jobs = {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}
            assert jobs["primeiro-aviso"] == datetime(2026, 12, 4, 9, 0, tzinfo=SP)
            # 08:00 already passed today: the reminder's next run is Monday, not Saturday...
            assert jobs["lembrete-vencimento"] == datetime(2026, 12, 7, 8, 0, tzinfo=SP)
            # ...and today's 08:00 slot, missed while the daemon was down, is caught up now.
            assert executed.get(timeout=30).job_id == "lembrete-vencimento:catch-up"
            reminders = len(smtp_server.received)
            assert reminders > 0
            assert executed.empty()

            clock.move_to(datetime(2026, 12, 4, 9, 0, 1, tzinfo=SP))
            daemon.scheduler.wakeup()
            event = executed.get(timeout=30)
            assert event.job_id == "primeiro-aviso"
            next_run = daemon.scheduler.get_job("primeiro-aviso").next_run_time
            assert next_run == datetime(2026, 12, 7, 9, 0, tzinfo=SP)  # skips the weekend
        finally:
            daemon.stop()

    layouts = [m.message["X-Cobranca-Layout"] for m in smtp_server.received]
    assert set(layouts[:reminders]) == {"lembrete-vencimento"}
    assert set(layouts[reminders:]) == {"primeiro-aviso"}
    history = HistoryStore(history_url)
    runs = history.runs()
    slots = [history.slot(name, AS_OF) for name in ("lembrete-vencimento", "primeiro-aviso")]
    history.close()
    assert [(r.layout, r.as_of, r.trigger, r.status) for r in runs] == [
        ("lembrete-vencimento", AS_OF, "scheduled", "finished"),
        ("primeiro-aviso", AS_OF, "scheduled", "finished"),
    ]
    assert [r.sent for r in runs] == [reminders, len(layouts) - reminders]
    assert all(slot is not None and slot.status == "finished" for slot in slots)


class DaemonProcess:
    """`cobranca daemon` as a subprocess whose stderr lines can be awaited."""

    def __init__(self, config: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cobranca", "daemon", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            self.seen.append(line)
            if text in line:
                return line


def test_daemon_reloads_on_sighup_keeps_last_good_config_and_stops_on_sigterm(
    demo_sqlite: str, tmp_path: Path
) -> None:
    data = config_data(
        source_url=demo_sqlite,
        history_url=f"sqlite:///{tmp_path / 'h.db'}",
        outbox=tmp_path / "outbox",
    )
    path = write_config(tmp_path / "c.yaml", data)
    daemon = DaemonProcess(path)
    try:
        daemon.wait_for("daemon started")
        path.write_text(path.read_text() + "\nunknown_key: 1\n")  # broken
        daemon.process.send_signal(signal.SIGHUP)
        line = daemon.wait_for("reload refused")
        assert "keeping the previous config" in line
        daemon.wait_for("unknown_key")  # the problem is named
        data["layouts"] = data["layouts"][:1]
        write_config(path, data)
        daemon.process.send_signal(signal.SIGHUP)
        assert "(1 layouts)" in daemon.wait_for("config reloaded")
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=20) == 0
        daemon.wait_for("daemon stopped")
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()


def _daemon_config(tmp_path: Path, source: str, history_url: str, smtp: SmtpServer) -> Path:
    data = config_data(source_url=source, history_url=history_url, smtp=smtp)
    data["daemon"] = {"retry_minutes": 15, "retry_limit": 3}
    return write_config(tmp_path / "c.yaml", data)


def _wait_for(executed: queue.Queue[JobExecutionEvent], job_id: str) -> None:
    while True:
        if executed.get(timeout=30).job_id == job_id:
            return


def test_restart_after_a_missed_slot_runs_it_once_and_only_for_today(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Down from Tuesday to Friday 08:40: Friday's 08:00 reminder runs once, for Friday only."""
    history_url = f"sqlite:///{tmp_path / 'h.db'}"
    path = _daemon_config(tmp_path, demo_sqlite, history_url, smtp_server)
    executed: queue.Queue[JobExecutionEvent] = queue.Queue()
    with time_machine.travel(datetime(2026, 12, 4, 8, 40, tzinfo=SP), tick=True):
        first = Daemon(path)
        first.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        first.start()
        try:
            _wait_for(executed, "lembrete-vencimento:catch-up")
        finally:
            first.stop()
        received = len(smtp_server.received)
        assert received > 0
        # Restarted ten minutes later: the slot is finished, nothing runs again.
        second = Daemon(path)
        second.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        second.start()
        try:
            _wait_for(executed, "lembrete-vencimento:catch-up")
        finally:
            second.stop()
    assert len(smtp_server.received) == received
    history = HistoryStore(history_url)
    runs = history.runs()
    history.close()
    assert [(r.layout, r.as_of) for r in runs] == [("lembrete-vencimento", AS_OF)]


def test_source_down_at_the_scheduled_time_is_retried_later_that_day(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    from cobranca.demo import write_demo_database

    source = f"sqlite:///{tmp_path / 'late' / 'protheus.db'}"  # not there at 09:00
    history_url = f"sqlite:///{tmp_path / 'h.db'}"
    path = _daemon_config(tmp_path, source, history_url, smtp_server)
    executed: queue.Queue[JobExecutionEvent] = queue.Queue()
    with time_machine.travel(datetime(2026, 12, 4, 8, 59, 59, tzinfo=SP), tick=True) as clock:
        daemon = Daemon(path)
        daemon.config = daemon.config.model_copy(
            update={"daemon": daemon.config.daemon.model_copy(update={"catch_up": False})}
        )
        daemon.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        daemon.start()
        try:
            clock.move_to(datetime(2026, 12, 4, 9, 0, 1, tzinfo=SP))
            daemon.scheduler.wakeup()
            _wait_for(executed, "primeiro-aviso")
            assert smtp_server.received == []
            retry = daemon.scheduler.get_job("primeiro-aviso:retry")
            assert retry is not None
            expected = datetime(2026, 12, 4, 9, 15, 1, tzinfo=SP)
            assert abs(retry.next_run_time - expected) < timedelta(seconds=2)

            write_demo_database(source, customers=40, seed=7, as_of=AS_OF)  # the ERP is back
            clock.move_to(datetime(2026, 12, 4, 9, 15, 2, tzinfo=SP))
            daemon.scheduler.wakeup()
            _wait_for(executed, "primeiro-aviso:retry")
        finally:
            daemon.stop()
    assert smtp_server.received
    history = HistoryStore(history_url)
    slot = history.slot("primeiro-aviso", AS_OF)
    statuses = [r.status for r in history.runs()]
    history.close()
    assert slot is not None and slot.status == "finished" and slot.attempts == 2
    assert statuses == ["failed", "finished"]


@pytest.mark.postgres
def test_two_daemons_on_one_history_run_each_slot_once(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path, postgres_url: Any
) -> None:
    path = _daemon_config(tmp_path, demo_sqlite, postgres_url(), smtp_server)
    executed: queue.Queue[JobExecutionEvent] = queue.Queue()
    with time_machine.travel(datetime(2026, 12, 4, 8, 59, 59, tzinfo=SP), tick=True) as clock:
        daemons = [Daemon(path), Daemon(path)]
        for daemon in daemons:
            daemon.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
            daemon.start()
        try:
            _wait_for(executed, "lembrete-vencimento:catch-up")
            _wait_for(executed, "lembrete-vencimento:catch-up")
            clock.move_to(datetime(2026, 12, 4, 9, 0, 1, tzinfo=SP))
            for daemon in daemons:
                daemon.scheduler.wakeup()
            _wait_for(executed, "primeiro-aviso")
            _wait_for(executed, "primeiro-aviso")
        finally:
            for daemon in daemons:
                daemon.stop()
    ran = [d.runs_finished for d in daemons]
    assert sum(ran) == 2  # each of the two slots ran once, in one daemon or the other
    ids = [str(m.message["Message-ID"]) for m in smtp_server.received]
    assert len(ids) == len(set(ids)) > 0


def test_a_long_running_daemon_keeps_only_its_last_runs_report(tmp_path: Path) -> None:
    """A company-scale report lists thousands of customers (prints, data problems...): a daemon
    that kept every run's report grew by that every day, for as long as it ran."""
    path = write_config(tmp_path / "c.yaml", offline_config_data(tmp_path))
    made: list[weakref.ref[RunReport]] = []

    def job(config: Any, layouts: list[str], *, as_of: Any, **_: Any) -> RunReport:
        result = LayoutResult(layouts[0], as_of, dry_run=False, sent=3)
        for n in range(20_000):
            result.prints.add(f"{n:06d}/01", "no e-mail address")
        report = RunReport([result])
        made.append(weakref.ref(report))
        return report

    daemon = Daemon(path, job=job)
    for day in (1, 2, 3, 4):  # Tuesday to Friday, one run a day
        with time_machine.travel(datetime(2026, 12, day, 9, 0, 5, tzinfo=SP), tick=False):
            assert daemon.run_layout("primeiro-aviso") is not None
    gc.collect()
    assert daemon.runs_finished == 4
    assert [ref() is not None for ref in made] == [False, False, False, True]
    assert "last: primeiro-aviso ok, 3 sent" in daemon.status_line()
