"""The daemon under systemd: notify protocol, journald priorities, `cobranca status` exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from cobranca.cli import main
from cobranca.scheduler import Daemon, _Wakeup
from conftest import REPO, config_data, write_config

SP = ZoneInfo("America/Sao_Paulo")


def _config(tmp_path: Path, source: str) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        config_data(source_url=source, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    outbox=tmp_path / "outbox"),
    )  # fmt: skip


def _messages(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            seen.extend(sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            break
        if any(until in m for m in seen):
            return seen
    raise AssertionError(f"{until!r} never came; got {seen}")


@contextmanager
def _daemon(
    tmp_path: Path, source: str, watchdog_usec: str, **popen: Any
) -> Iterator[tuple[socket.socket, subprocess.Popen[str]]]:
    """`cobranca daemon` as systemd starts it, and the socket its notifications arrive at."""
    path = _config(tmp_path, source)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": watchdog_usec,
               "JOURNAL_STREAM": "8:1234", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        env.pop("WATCHDOG_PID", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "cobranca", "daemon", "--config", str(path)],
            text=True, cwd=REPO, env=env, **popen,
        )  # fmt: skip
        try:
            yield sock, process
        finally:
            if process.poll() is None:
                process.kill()


def test_notify_ready_status_watchdog_reload_and_stop(demo_sqlite: str, tmp_path: Path) -> None:
    with _daemon(tmp_path, demo_sqlite, "400000", stderr=subprocess.PIPE) as (sock, process):
        first = _messages(sock, "READY=1")
        assert any(m.startswith("STATUS=next: ") for m in first)
        assert "WATCHDOG=1" in _messages(sock, "WATCHDOG=1")
        process.send_signal(signal.SIGHUP)
        reload = _messages(sock, "READY=1")
        assert "RELOADING=1" in reload
        process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _messages(sock, "STOPPING=1")
        assert process.wait(timeout=20) == 0
    stderr = process.stderr.read() if process.stderr else ""
    lines = [line for line in stderr.splitlines() if line]
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines), lines
    assert any("config reloaded" in line for line in lines)
    assert any(line.startswith("<6>") and "daemon stopped" in line for line in lines)


@pytest.fixture
def wakeup() -> Iterator[_Wakeup]:
    """A control loop's wake-up with this process's handlers, put back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGTERM)}
    wake = _Wakeup()
    wake.install(signal.SIGHUP, signal.SIGTERM)
    try:
        yield wake
    finally:
        wake.close()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_signal_or_a_poke_wakes_the_loop_before_its_timeout(wakeup: _Wakeup) -> None:
    assert wakeup.wait(0.01) == []
    signal.raise_signal(signal.SIGHUP)
    signal.raise_signal(signal.SIGTERM)
    start = time.monotonic()
    assert wakeup.wait(60) == [signal.SIGHUP, signal.SIGTERM]
    assert time.monotonic() - start < 30  # woken, not timed out
    poker = threading.Timer(0.05, wakeup.poke)  # as the scheduler's thread does after a run
    poker.start()
    start = time.monotonic()
    assert wakeup.wait(60) == []
    assert time.monotonic() - start < 30
    poker.join()


def test_a_burst_of_reloads_leaves_the_daemon_answering(demo_sqlite: str, tmp_path: Path) -> None:
    """Signals arrive at any point of the control loop: none may hang it. An Event set from
    the SIGHUP handler did when the loop held that Event's lock: with the loop turning every
    millisecond (the watchdog's pace here), this burst hung the earlier code in 4 of 6 runs."""
    with _daemon(tmp_path, demo_sqlite, "2000", stderr=subprocess.DEVNULL) as (sock, process):
        _messages(sock, "READY=1")
        for _ in range(4000):
            process.send_signal(signal.SIGHUP)
            time.sleep(0.0002)
        assert "RELOADING=1" in _messages(sock, "RELOADING=1")
        _messages(sock, "READY=1")
        process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _messages(sock, "STOPPING=1")
        assert process.wait(timeout=30) == 0


def test_json_log_lines(demo_sqlite: str, tmp_path: Path) -> None:
    path = _config(tmp_path, demo_sqlite)
    result = subprocess.run(
        [sys.executable, "-m", "cobranca", "run", "primeiro-aviso", "--config", str(path),
         "--as-of", "2026-12-04", "--log-format", "json"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert entries and {"time", "level", "priority", "logger", "message"} <= entries[0].keys()
    assert any("sent" in e["message"] for e in entries)


def test_status_is_healthy_after_the_scheduled_runs_and_warns_on_a_missed_one(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, demo_sqlite)
    with time_machine.travel(datetime(2026, 12, 4, 10, 30, tzinfo=SP), tick=False):
        assert main(["status", "--config", str(path)]) == 1
        out = capsys.readouterr().out
        assert "WARNING: did not run when due at 2026-12-04 08:00" in out
        assert "WARNING: did not run when due at 2026-12-04 09:00" in out
    with time_machine.travel(datetime(2026, 12, 4, 10, 30, tzinfo=SP), tick=True):
        daemon = Daemon(path)
        for layout in ("lembrete-vencimento", "primeiro-aviso"):
            assert daemon.run_layout(layout) is not None
        assert main(["status", "--config", str(path)]) == 0
        assert capsys.readouterr().out.strip().endswith("OK")


def test_operator_alert_on_a_failed_scheduled_run(smtp_server: Any, tmp_path: Path) -> None:
    data = config_data(source_url=f"sqlite:///{tmp_path / 'missing.db'}",
                       history_url=f"sqlite:///{tmp_path / 'h.db'}", smtp=smtp_server)  # fmt: skip
    data["daemon"] = {"alert_email": "operador@empresa.example", "retry_limit": 0}
    path = write_config(tmp_path / "c.yaml", data)
    daemon = Daemon(path)
    report = daemon.run_layout("primeiro-aviso")
    assert report is not None and report.results[0].error
    (alert,) = smtp_server.received
    assert alert.rcpt_tos == ["operador@empresa.example"]
    assert "[cobranca] layout primeiro-aviso" in str(alert.message["Subject"])
    assert "does not exist" in alert.message.get_content()
