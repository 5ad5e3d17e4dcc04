"""Business days and the send window, on every path that sends: run, daemon, retries, CLI.

The wall clock is moved with time-machine (or handed to the run), never waited for. The
calendar is the config's default: national + SP holidays, Carnival, 08:00–18:00.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from cobranca.cli import main
from cobranca.config import ConfigError, load_config
from cobranca.history import HistoryStore
from cobranca.models import LetterStatus
from cobranca.runner import run_layouts
from cobranca.scheduler import Daemon
from conftest import AS_OF, LAYOUTS, SmtpServer, config_data, write_config

SP = ZoneInfo("America/Sao_Paulo")
FIRST_NOTICE = [layout for layout in LAYOUTS if layout["name"] == "primeiro-aviso"]
DAILY = [{**FIRST_NOTICE[0], "schedule": "0 9 * * *"}]  # every day, weekends included


def _config(
    tmp_path: Path,
    source: str,
    smtp: SmtpServer | None = None,
    calendar: dict[str, Any] | None = None,
    layouts: list[dict[str, Any]] | None = None,
) -> Path:
    data = config_data(
        source_url=source,
        history_url=f"sqlite:///{tmp_path / 'h.db'}",
        smtp=smtp,
        outbox=tmp_path / "outbox",
        layouts=layouts or FIRST_NOTICE,
    )
    data["calendar"] = calendar or {}  # the defaults: business days, 08:00–18:00
    return write_config(tmp_path / "c.yaml", data)


def _at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SP)


def _statuses(tmp_path: Path) -> list[tuple[str, str]]:
    history = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        return [(letter.status, letter.reason) for letter in history.letters()]
    finally:
        history.close()


@pytest.mark.parametrize(
    ("moment", "why"),
    [
        (_at(2026, 12, 5, 10, 0), "2026-12-05 is a Saturday"),
        (_at(2026, 12, 25, 10, 0), "holiday (Natal)"),
        (_at(2026, 2, 16, 10, 0), "holiday (Carnaval)"),
        (_at(2026, 7, 9, 10, 0), "holiday"),  # SP's Revolução Constitucionalista
        (_at(2026, 12, 4, 7, 59), "outside the send window 08:00–18:00"),
        (_at(2026, 12, 4, 18, 0), "outside the send window 08:00–18:00"),
    ],
)
def test_no_letter_is_planned_or_sent_when_letters_may_not_go_out(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path, moment: datetime, why: str
) -> None:
    config = load_config(_config(tmp_path, demo_sqlite, smtp_server))

    report = run_layouts(config, as_of=AS_OF, now=lambda: moment)

    assert not report.ok
    assert why in report.results[0].error
    assert "--ignore-calendar" in report.results[0].error
    assert smtp_server.received == []
    assert _statuses(tmp_path) == []  # nothing planned: the next allowed run plans afresh


def test_state_holiday_counts_only_in_the_creditors_state(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    # 9 July is a holiday in São Paulo only: a creditor in Rio de Janeiro sends that day.
    config = load_config(_config(tmp_path, demo_sqlite, smtp_server, calendar={"state": "RJ"}))

    report = run_layouts(config, as_of=AS_OF, now=lambda: _at(2026, 7, 9, 10, 0))

    assert report.ok and report.results[0].sent > 0


def test_extra_holidays_from_config_and_calendar_switched_off(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    closure = {"extra_holidays": ["2026-12-04"]}
    config = load_config(_config(tmp_path, demo_sqlite, smtp_server, calendar=closure))
    report = run_layouts(config, as_of=AS_OF, now=lambda: _at(2026, 12, 4, 10, 0))
    assert "holiday" in report.results[0].error

    anytime = {"business_days_only": False, "send_window": None}
    config = load_config(_config(tmp_path, demo_sqlite, smtp_server, calendar=anytime))
    report = run_layouts(config, as_of=AS_OF, now=lambda: _at(2026, 12, 5, 23, 30))
    assert report.ok and report.results[0].sent > 0


def test_window_closing_mid_run_leaves_the_rest_planned_with_why(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    config = load_config(_config(tmp_path, demo_sqlite, smtp_server))
    clock = iter([_at(2026, 12, 4, 17, 59)] * 4)

    def now() -> datetime:
        return next(clock, _at(2026, 12, 4, 18, 0))  # three letters, then the window closes

    report = run_layouts(config, as_of=AS_OF, now=now)

    result = report.results[0]
    assert result.sent == 3
    assert "outside the send window 08:00–18:00" in result.window_closed
    assert result.left_planned > 0
    planned = [reason for status, reason in _statuses(tmp_path) if status == LetterStatus.PLANNED]
    assert len(planned) == result.left_planned
    assert all("outside the send window" in reason for reason in planned)
    assert len(smtp_server.received) == 3


def test_cli_refuses_outside_the_calendar_unless_told_to_ignore_it(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, demo_sqlite)
    with time_machine.travel(_at(2026, 12, 5, 10, 0), tick=False):
        refused = main(["run", "--config", str(path), "--as-of", AS_OF.isoformat()])
        out = capsys.readouterr().out
        allowed = main(
            ["run", "--config", str(path), "--as-of", AS_OF.isoformat(), "--ignore-calendar"]
        )
    assert refused != 0 and "2026-12-05 is a Saturday" in out
    assert allowed == 0
    assert any((tmp_path / "outbox").glob("*.eml"))


def test_send_window_must_be_ordered(tmp_path: Path) -> None:
    path = _config(
        tmp_path, "sqlite:///x.db", calendar={"send_window": {"start": "18:00", "end": "08:00"}}
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "calendar.send_window" in str(error.value) and "must be before end" in str(error.value)


@pytest.fixture
def executed() -> Iterator[queue.Queue[JobExecutionEvent]]:
    yield queue.Queue()


def test_daemon_skips_the_weekend_and_runs_once_on_monday(
    demo_sqlite: str,
    smtp_server: SmtpServer,
    tmp_path: Path,
    executed: queue.Queue[JobExecutionEvent],
) -> None:
    path = _config(tmp_path, demo_sqlite, smtp_server, layouts=DAILY)
    with time_machine.travel(_at(2026, 12, 5, 8, 59, 50), tick=True) as clock:  # Saturday
        daemon = Daemon(path)
        daemon.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        daemon.start()
        try:
            assert daemon.catch_up() == []  # Saturday: nothing to catch up
            job = daemon.scheduler.get_job("primeiro-aviso")
            assert job.next_run_time == _at(2026, 12, 7, 9, 0)  # not Saturday or Sunday 09:00

            clock.move_to(_at(2026, 12, 7, 9, 0, 1))
            daemon.scheduler.wakeup()
            assert executed.get(timeout=30).job_id == "primeiro-aviso"
            assert daemon.scheduler.get_job("primeiro-aviso").next_run_time == _at(
                2026, 12, 8, 9, 0
            )
        finally:
            daemon.stop()
    history = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    runs = history.runs()
    history.close()
    assert [(run.as_of, run.trigger) for run in runs] == [(date(2026, 12, 7), "scheduled")]
    assert len(smtp_server.received) == runs[0].sent > 0


def test_daemon_started_on_monday_catches_up_the_weekend_once(
    demo_sqlite: str,
    smtp_server: SmtpServer,
    tmp_path: Path,
    executed: queue.Queue[JobExecutionEvent],
) -> None:
    # A monthly layout due Sunday 1 November 2026; Monday the 2nd is Finados: it runs Tuesday.
    monthly = [{**FIRST_NOTICE[0], "schedule": "0 9 1 * *"}]
    path = _config(tmp_path, demo_sqlite, smtp_server, layouts=monthly)
    with time_machine.travel(_at(2026, 11, 3, 10, 0), tick=True):
        daemon = Daemon(path)
        daemon.scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        daemon.start()
        try:
            assert executed.get(timeout=30).job_id == "primeiro-aviso:catch-up"
            assert daemon.scheduler.get_job("primeiro-aviso").next_run_time == _at(
                2026, 12, 1, 9, 0
            )
        finally:
            daemon.stop()
    history = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    runs = history.runs()
    history.close()
    assert [run.as_of for run in runs] == [date(2026, 11, 3)]


def test_daemon_started_after_the_window_waits_for_the_next_business_day(
    demo_sqlite: str, tmp_path: Path
) -> None:
    path = _config(tmp_path, demo_sqlite, layouts=DAILY)
    with time_machine.travel(_at(2026, 12, 24, 19, 0), tick=False):  # Christmas Eve, evening
        daemon = Daemon(path)
        daemon.start()
        try:
            assert daemon.catch_up() == []
            # 25th Christmas, 26th–27th weekend: one run on Monday the 28th.
            assert daemon.scheduler.get_job("primeiro-aviso").next_run_time == _at(
                2026, 12, 28, 9, 0
            )
        finally:
            daemon.stop()


def test_retry_is_not_scheduled_past_the_window(demo_sqlite: str, tmp_path: Path) -> None:
    path = _config(tmp_path, demo_sqlite, layouts=DAILY)
    with time_machine.travel(_at(2026, 12, 4, 17, 50), tick=False):
        daemon = Daemon(path)
        daemon._retry_later("primeiro-aviso", 0, "source down")  # 15 minutes later is 18:05
        assert daemon.scheduler.get_job("primeiro-aviso:retry") is None
    with time_machine.travel(_at(2026, 12, 4, 10, 0), tick=False):
        daemon._retry_later("primeiro-aviso", 0, "source down")
        job = daemon.scheduler.get_job("primeiro-aviso:retry")
        assert job is not None and job.trigger.run_date == _at(2026, 12, 4, 10, 15)


def test_desk_commands_keep_to_the_calendar_too(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, demo_sqlite)
    with time_machine.travel(_at(2026, 12, 25, 10, 0), tick=False):  # Christmas
        send = main(["send", "primeiro-aviso", "--customer", "000001", "--as-of",
                     AS_OF.isoformat(), "--yes", "--config", str(path)])  # fmt: skip
        send_err = capsys.readouterr().err
        resend = main(["resend", "1", "--config", str(path)])
        resend_err = capsys.readouterr().err
    assert send != 0 and "2026-12-25 is a holiday (Natal)" in send_err
    assert resend != 0 and "2026-12-25 is a holiday (Natal)" in resend_err
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").iterdir())
