"""The crash test: kill `cobranca run` anywhere, restart it, and no letter is lost or sent twice.

A real `python -m cobranca run` subprocess sends a few hundred letters to an aiosmtpd server in
this process, which kills it with SIGKILL at chosen points: before (in RCPT), during (the whole
message received, no answer yet) and after (just after the 250) the k-th SMTP transaction of a
run; while the plan is being recorded; and after random delays. It is restarted each time until a
run completes. Then every letter in the history is compared with what the server received, by
Message-ID. The outbox transport gets the same treatment, and a SIGTERM must stop a run cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from cobranca.config import Config, load_config
from cobranca.demo import write_demo_database
from cobranca.history import HistoryStore, LetterRecord
from cobranca.models import Disposition
from cobranca.plan import plan_letter
from cobranca.source import ProtheusSource
from cobranca.transports.outbox import OutboxTransport
from conftest import AS_OF, REPO, config_data, free_port, write_config

WIDE_LAYOUT = [
    {
        "name": "todos-vencidos",
        "schedule": "0 9 * * mon-fri",
        "template": "primeiro-aviso",
        "subject": "Aviso de título em aberto – {{ customer.name }}",
        "selection": {"days": {"min": 1}},
    }
]
RUN_TIMEOUT = 60  # seconds one `cobranca run` may take before the test gives up on it


# --- the SMTP server that kills its client -------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """Where to SIGKILL one run.

    ``rcpt``: in the RCPT of the run's n-th message (before any data went out); ``data``: with
    the n-th message wholly received, before answering it; ``after``: ``delay`` seconds after
    answering 250 to the n-th message (0: right after the answer is written); ``plan``: as soon as
    the history holds n letters; ``delay``: ``delay`` seconds after the process started.
    """

    where: str
    n: int = 0
    delay: float = 0.0

    def __str__(self) -> str:
        if self.where == "delay":
            return f"delay {self.delay:.2f}s"
        extra = f" +{self.delay * 1000:.0f}ms" if self.delay else ""
        return f"{self.where} #{self.n}{extra}"


@dataclass
class Delivered:
    message_id: str
    rcpt_tos: list[str]
    message: EmailMessage


def delivered_from(envelope: Any) -> Delivered:
    message = message_from_bytes(envelope.original_content, policy=policy.default)
    # A long Message-ID is folded onto its own line; the parsed value keeps the fold's space.
    return Delivered(str(message["Message-ID"]).strip(), list(envelope.rcpt_tos), message)  # type: ignore[arg-type]


async def _wait_for_disconnect() -> None:
    """The killed client's socket closes and aiosmtpd cancels this session's task."""
    await asyncio.sleep(5)


@dataclass
class KillingHandler:
    """Records every message it accepts (with its Message-ID) and kills its client on cue."""

    received: list[Delivered] = field(default_factory=list)
    pid: int | None = None
    point: KillPoint | None = None
    messages: int = 0  # MAIL commands from the current process
    killed: str = ""  # what the kill interrupted, once it happened
    killed_message_id: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, pid: int, point: KillPoint | None) -> None:
        with self.lock:
            self.pid, self.point, self.messages = pid, point, 0
            self.killed, self.killed_message_id = "", ""

    def disarm(self) -> None:
        with self.lock:
            self.pid = None  # the process was reaped: its pid may be reused

    def kill(self, what: str) -> bool:
        with self.lock:
            if self.pid is None or self.killed:
                return False
            os.kill(self.pid, signal.SIGKILL)
            self.killed = what
            return True

    def _due(self, where: str) -> bool:
        point = self.point
        return point is not None and point.where == where and self.messages == point.n

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.messages += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self._due("rcpt") and self.kill("rcpt"):
            await _wait_for_disconnect()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        delivered = delivered_from(envelope)
        # The server has the whole message in every case below (a real one would have queued
        # it): only its answer may be missing.
        self.received.append(delivered)
        if self._due("data"):
            self.killed_message_id = delivered.message_id
            if self.kill("data"):
                await _wait_for_disconnect()
        elif self._due("after"):
            assert self.point is not None
            self.killed_message_id = delivered.message_id
            if self.point.delay == 0:
                await server.push("250 Message accepted for delivery")
                if self.kill("after"):
                    await _wait_for_disconnect()
            else:
                threading.Timer(self.point.delay, self.kill, args=("after",)).start()
        return "250 Message accepted for delivery"


@pytest.fixture
def killing_smtp() -> Iterator[tuple[KillingHandler, int]]:
    handler = KillingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


# --- running and inspecting `cobranca run` -------------------------------------------------------


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def start_run(config: Path, log_dir: Path, label: str) -> tuple[subprocess.Popen[bytes], Path]:
    out, err = log_dir / f"{label}.out", log_dir / f"{label}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "cobranca", "run", "--config", str(config),
             "--as-of", AS_OF.isoformat(), "--format", "json"],
            stdout=stdout, stderr=stderr, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    return process, log_dir / label


def exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process ended, without reaping it: until reaped its pid cannot be reused,
    so the SMTP handler's thread may still signal it safely."""
    if process.returncode is not None:
        return True
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, process.pid, flags) is not None


def wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not exited(process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def finish_run(
    process: subprocess.Popen[bytes],
    base: Path,
    started: float,
    before_reap: Callable[[], None] = lambda: None,
) -> RunResult:
    if not wait_exited(process, RUN_TIMEOUT):
        process.kill()
        process.wait()
        raise AssertionError(f"{base.name} still running after {RUN_TIMEOUT}s")
    before_reap()
    process.wait()
    out = base.with_suffix(".out").read_text(encoding="utf-8", errors="replace")
    err = base.with_suffix(".err").read_text(encoding="utf-8", errors="replace")
    return RunResult(process.returncode, out, err, time.monotonic() - started)


def count_letters(history: Path) -> int:
    """Letters recorded so far, read without disturbing the run (0 before the table exists)."""
    if not history.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{history}?mode=rw", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM cobranca_letters").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def statuses(history: Path) -> dict[str, list[str]]:
    """Status → message ids, straight from the history file."""
    by_status: dict[str, list[str]] = {}
    with sqlite3.connect(f"file:{history}?mode=rw", uri=True, timeout=5) as connection:
        for status, message_id in connection.execute(
            "SELECT status, message_id FROM cobranca_letters ORDER BY id"
        ):
            by_status.setdefault(status, []).append(message_id)
    return by_status


def sending_claims(history: Path) -> set[tuple[str, int]]:
    """(message id, attempt) of every letter left 'sending'."""
    with sqlite3.connect(f"file:{history}?mode=rw", uri=True, timeout=5) as connection:
        return set(
            connection.execute(
                "SELECT message_id, attempts FROM cobranca_letters WHERE status = 'sending'"
            )
        )


def expected_letters(config: Config) -> dict[str, Disposition]:
    """What the plan decides for each customer with an empty history: the letters owed."""
    layout = config.layouts[0]
    source = ProtheusSource(config.source)
    try:
        return {
            group.customer.key: plan_letter(group, layout, AS_OF, None).disposition
            for group in source.customers_titles(layout.selection, AS_OF)
        }
    finally:
        source.close()


def history_letters(config: Config) -> list[LetterRecord]:
    history = HistoryStore(config.history.engine_url())
    try:
        return history.letters()
    finally:
        history.close()


def kill_schedule(rng: random.Random, total: int) -> list[KillPoint]:
    """Three kills while planning, 18 in SMTP transactions (six before, six during, six after;
    each at a random message of its run) and one at a random moment: 22 in all."""
    points = [KillPoint("plan", int(total * share)) for share in (0.1, 0.45, 0.8)]
    smtp = ["rcpt", "data", "after"] * 6
    rng.shuffle(smtp)
    for index, where in enumerate(smtp):
        delay = rng.choice((0.0, 0.0, 0.002, 0.006)) if where == "after" else 0.0
        points.append(KillPoint(where, rng.randint(1, 12), delay))
        if index == 8:
            points.append(KillPoint("delay", delay=rng.uniform(0.3, 1.5)))
    return points


# --- the crash test -----------------------------------------------------------------------------


def test_sigkill_anywhere_then_restart_loses_nothing_and_sends_nothing_twice(
    killing_smtp: tuple[KillingHandler, int], tmp_path: Path
) -> None:
    handler, port = killing_smtp
    source_url = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(source_url, customers=250, seed=11, as_of=AS_OF)
    history_file = tmp_path / "history.db"
    data = config_data(
        source_url=source_url, history_url=f"sqlite:///{history_file}", layouts=WIDE_LAYOUT
    )
    data["delivery"]["transport"] = "smtp"
    data["delivery"]["smtp"] = {
        "host": "127.0.0.1", "port": port, "security": "none", "timeout_seconds": 10,
    }  # fmt: skip
    path = write_config(tmp_path / "c.yaml", data)
    config = load_config(path)
    expected = expected_letters(config)
    to_send = {key for key, d in expected.items() if d is Disposition.SEND}
    to_print = {key for key, d in expected.items() if d is Disposition.PRINT}
    assert len(to_send) >= 200, "the demo must give a few hundred letters"

    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(20261204)
    # (point, what the kill interrupted, the message it hit if known, statuses after it)
    kills: list[tuple[KillPoint | None, str, str, dict[str, list[str]]]] = []
    plan_landed = 0
    final: RunResult | None = None
    schedule: list[KillPoint | None] = [*kill_schedule(rng, len(expected)), None]
    for attempt, point in enumerate(schedule):
        started = time.monotonic()
        process, base = start_run(path, logs, f"run-{attempt:02d}")
        handler.arm(process.pid, point)
        try:
            if point is not None and point.where == "plan":
                while not exited(process) and count_letters(history_file) < point.n:
                    time.sleep(0.002)
                handler.kill("plan")
            elif (
                point is not None
                and point.where == "delay"
                and not wait_exited(process, point.delay)
            ):
                handler.kill("delay")
            result = finish_run(process, base, started, before_reap=handler.disarm)
        finally:
            handler.disarm()
        if not handler.killed:
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr, result.stderr
            final = result
            break
        assert result.returncode == -signal.SIGKILL, (point, result.stderr)
        state = statuses(history_file)
        # One process sends one letter at a time: at most one can be left 'sending'.
        assert len(state.get("sending", [])) <= 1, (point, state.get("sending"))
        if point is not None and point.where == "plan":
            landed = 0 < count_letters(history_file) < len(expected) and handler.messages == 0
            plan_landed += landed
        if handler.killed in ("rcpt", "data"):
            # The letter in the middle of its transaction is the one left 'sending'.
            assert len(state.get("sending", [])) == 1, (point, state)
        if handler.killed == "data":
            assert state["sending"] == [handler.killed_message_id]
        kills.append((point, handler.killed, handler.killed_message_id, state))
    assert final is not None, "every run was killed: the schedule never let one finish"

    killed_where = Counter(what for _, what, _, _ in kills)
    assert len(kills) >= 20, killed_where
    assert min(killed_where["rcpt"], killed_where["data"], killed_where["after"]) >= 5, killed_where
    assert plan_landed >= 3, "the plan-phase kills must land while letters are being recorded"

    # A further run finds nothing to plan and nothing to send.
    check = finish_run(*start_run(path, logs, "check"), time.monotonic())
    assert check.returncode == 0 and "Traceback" not in check.stderr, check.stderr
    layout = check.summary()["layouts"][0]
    assert (layout["planned"], layout["sent"], layout["left_planned"]) == (0, 0, 0), layout
    assert check.summary()["recovered"] == []

    letters = history_letters(config)
    by_id = {letter.message_id: letter for letter in letters}
    assert len(by_id) == len(letters), "two letters share a Message-ID"
    received = Counter(d.message_id for d in handler.received)
    twice = {mid: n for mid, n in received.items() if n > 1}
    assert not twice, f"received more than once: {twice}"
    unknown = set(received) - set(by_id)
    assert not unknown, f"received messages no letter in the history accounts for: {unknown}"

    by_status = Counter(letter.status for letter in letters)
    assert set(by_status) <= {"sent", "ambiguous", "print_needed"}, by_status
    for letter in letters:
        if letter.status == "sent":
            assert received[letter.message_id] == 1, (letter.id, letter.customer_code)
        elif letter.status == "ambiguous":
            assert received[letter.message_id] <= 1
    for delivered in handler.received:
        letter = by_id[delivered.message_id]
        assert delivered.rcpt_tos == letter.recipients.split(", "), letter.id
    # Only an interrupted transaction leaves a letter ambiguous: at most one per kill.
    assert by_status["ambiguous"] <= len(kills)
    assert by_status["sent"] + by_status["ambiguous"] == len(to_send)

    keys = Counter(f"{r.customer_code}/{r.customer_store}" for r in letters)
    assert max(keys.values()) == 1
    mailed = {f"{r.customer_code}/{r.customer_store}" for r in letters if r.transport == "smtp"}
    printed = {f"{r.customer_code}/{r.customer_store}" for r in letters if r.transport == "print"}
    assert mailed == to_send
    assert printed == to_print

    # What each kill interrupted ended where it must.
    for point, what, hit, state in kills:
        if what == "rcpt":  # nothing went out: ambiguous (SMTP cannot tell), never received
            (message_id,) = state["sending"]
            assert by_id[message_id].status == "ambiguous", point
            assert received[message_id] == 0, point
        elif what == "data":  # the server has it, the client never heard: ambiguous, once
            assert by_id[hit].status == "ambiguous", point
            assert received[hit] == 1, point
        elif what == "after":  # answered: sent if recorded before the kill, else ambiguous
            assert by_id[hit].status in ("sent", "ambiguous"), point
            assert received[hit] == 1, point


# --- the outbox can prove delivery ---------------------------------------------------------------


def outbox_path(outbox: Path, message_id: str) -> Path:
    return OutboxTransport(outbox).path_for(message_id)


def _outbox_files(outbox: Path) -> tuple[list[Path], list[Path]]:
    """(complete letters, temporary files) in the outbox."""
    if not outbox.exists():
        return [], []
    names = list(outbox.iterdir())
    temporary = [p for p in names if p.name.startswith(".tmp-")]
    return [p for p in names if p.suffix == ".eml" and p not in temporary], temporary


BATCH = 8


def test_outbox_run_killed_anywhere_ends_with_one_file_per_letter_and_nothing_ambiguous(
    tmp_path: Path,
) -> None:
    source_url = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(source_url, customers=70, seed=5, as_of=AS_OF)
    history_file = tmp_path / "history.db"
    outbox = tmp_path / "outbox"
    data = config_data(source_url=source_url, history_url=f"sqlite:///{history_file}",
                       outbox=outbox, layouts=WIDE_LAYOUT)  # fmt: skip
    data["delivery"]["outbox"]["batch_size"] = BATCH  # several batches in ~60 letters
    path = write_config(tmp_path / "c.yaml", data)
    config = load_config(path)
    expected = expected_letters(config)
    to_send = {key for key, d in expected.items() if d is Disposition.SEND}
    logs = tmp_path / "logs"
    logs.mkdir()

    def written() -> int:
        return len(_outbox_files(outbox)[0])

    stale: set[Path] = set()  # temporary files left by earlier kills

    def writing() -> bool:
        return bool(set(_outbox_files(outbox)[1]) - stale)

    def claimed_unwritten() -> bool:
        sending = statuses(history_file).get("sending", []) if history_file.exists() else []
        return any(not outbox_path(outbox, message_id).exists() for message_id in sending)

    # (what to wait for, then SIGKILL at once): letters recorded while planning; the n-th file
    # renamed into place (before its letter is recorded sent); a temporary file being written.
    triggers: list[tuple[str, Callable[[], bool]]] = [
        ("plan: 20 letters recorded", lambda: count_letters(history_file) >= 20),
        ("plan: 50 letters recorded", lambda: count_letters(history_file) >= 50),
        ("file 5 renamed", lambda: written() >= 5),
        ("file 12 being written", lambda: written() >= 12 and writing()),
        ("file 20 renamed", lambda: written() >= 20),
        ("file 28 renamed", lambda: written() >= 28),
        ("file 35 being written", lambda: written() >= 35 and writing()),
        ("letter 40 claimed, no file yet", lambda: written() >= 39 and claimed_unwritten()),
        ("file 46 renamed", lambda: written() >= 46),
    ]
    # Each claim left 'sending' by a kill, as (message id, attempt): a run killed before its
    # recovery step sees the same claims again, and they count once.
    with_file: set[tuple[str, int]] = set()
    without_file: set[tuple[str, int]] = set()
    for attempt, (label, trigger) in enumerate(triggers):
        stale = set(_outbox_files(outbox)[1])
        process, base = start_run(path, logs, f"run-{attempt}")
        while process.poll() is None and not trigger():
            time.sleep(0.0005)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        result = finish_run(process, base, time.monotonic())
        assert result.returncode == -signal.SIGKILL, (label, result.stderr)
        left = statuses(history_file).get("sending", [])
        assert len(left) <= BATCH, label  # one batch at a time is claimed
        for claim in sending_claims(history_file):
            (with_file if outbox_path(outbox, claim[0]).exists() else without_file).add(claim)
    result = finish_run(*start_run(path, logs, "final"), time.monotonic())
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.summary()["layouts"][0]["left_planned"] == 0

    letters = [r for r in history_letters(config) if r.transport == "outbox"]
    assert {f"{r.customer_code}/{r.customer_store}" for r in letters} == to_send
    assert Counter(r.status for r in letters) == {"sent": len(to_send)}, "nothing ambiguous"
    files, _ = _outbox_files(outbox)
    assert len(files) == len(letters)
    for letter in letters:
        target = outbox_path(outbox, letter.message_id)
        assert target.exists(), letter.id
        message = message_from_bytes(target.read_bytes(), policy=policy.default)
        assert str(message["Message-ID"]).strip() == letter.message_id
        assert message.get_body(("plain",)) is not None  # complete, not half a letter
    # A kill between the rename and the record is confirmed from the file; one before the
    # rename (while writing) puts the letter back to planned, and the next run sends it.
    assert with_file, "no kill landed between a file's rename and its record"
    assert without_file, "no kill landed while a file was being written"
    history = HistoryStore(config.history.engine_url())
    try:
        reasons = Counter(e.reason for r in letters for e in history.events(r.id))
    finally:
        history.close()
    assert reasons["confirmed after an interrupted run"] == len(with_file)
    assert reasons["interrupted before delivery"] == len(without_file)


# SIGKILL exactly while a batch's files are being made durable: after their bytes, before the
# renames.
KILLED_IN_FSYNC = """
import os, signal, sys
import cobranca.transports.outbox as outbox
outbox._sync_filesystem = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
from cobranca.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_outbox_killed_while_writing_leaves_no_extra_eml_file(
    demo_sqlite: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    outbox=outbox, layouts=WIDE_LAYOUT),
    )  # fmt: skip
    argv = ["run", "--config", str(path), "--as-of", AS_OF.isoformat(), "--format", "json"]
    crashed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_FSYNC, *argv], cwd=REPO, capture_output=True, timeout=60
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    finished = subprocess.run(
        [sys.executable, "-m", "cobranca", *argv], cwd=REPO, capture_output=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    sent = json.loads(finished.stdout)["layouts"][0]["sent"]
    assert sent > 0
    # What a mailer picking up the spool sees: every name ending in .eml is a letter to send.
    spooled = sorted(p.name for p in outbox.iterdir() if p.name.endswith(".eml"))
    assert len(spooled) == sent, spooled


# --- SIGTERM: finish the letter in flight, leave the rest planned ---------------------------------


@dataclass
class TerminatingHandler:
    """Sends SIGTERM to the run from inside the DATA of its n-th message, then accepts it."""

    at: int
    pid: int = 0
    received: list[Delivered] = field(default_factory=list)
    terminated_at: float = 0.0
    terminated_message_id: str = ""

    def disarm(self) -> None:
        self.pid = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        delivered = delivered_from(envelope)
        self.received.append(delivered)
        if len(self.received) == self.at and self.pid:
            self.terminated_message_id = delivered.message_id
            self.terminated_at = time.monotonic()
            os.kill(self.pid, signal.SIGTERM)
            await asyncio.sleep(0.2)  # the signal arrives while the client awaits the answer
        return "250 Message accepted for delivery"


def test_sigterm_mid_delivery_finishes_the_letter_in_flight_and_leaves_the_rest_planned(
    demo_sqlite: str, tmp_path: Path
) -> None:
    handler = TerminatingHandler(at=5)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        history_file = tmp_path / "history.db"
        data = config_data(
            source_url=demo_sqlite, history_url=f"sqlite:///{history_file}", layouts=WIDE_LAYOUT
        )
        data["delivery"]["transport"] = "smtp"
        data["delivery"]["smtp"] = {"host": "127.0.0.1", "port": port, "security": "none"}
        path = write_config(tmp_path / "c.yaml", data)
        config = load_config(path)
        to_send = {k for k, d in expected_letters(config).items() if d is Disposition.SEND}
        assert len(to_send) > 10
        logs = tmp_path / "logs"
        logs.mkdir()

        process, base = start_run(path, logs, "terminated")
        handler.pid = process.pid
        result = finish_run(process, base, time.monotonic(), before_reap=handler.disarm)
        stopped_after = time.monotonic() - handler.terminated_at
        assert handler.terminated_at, "the SIGTERM was never sent"
        assert stopped_after <= 10, f"took {stopped_after:.1f}s to stop"
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert "received SIGTERM" in result.stderr
        layout = result.summary()["layouts"][0]
        assert layout["interrupted"] is True
        assert layout["sent"] == 5 and layout["left_planned"] == len(to_send) - 5, layout

        state = statuses(history_file)
        assert handler.terminated_message_id in state["sent"], "the letter in flight finished"
        assert len(state["sent"]) == 5 and "sending" not in state and "ambiguous" not in state
        assert len(state["planned"]) == len(to_send) - 5
        assert len(handler.received) == 5

        rest = finish_run(*start_run(path, logs, "rest"), time.monotonic())
        assert rest.returncode == 0 and "Traceback" not in rest.stderr, rest.stderr
        assert rest.summary()["layouts"][0]["sent"] == len(to_send) - 5
    finally:
        controller.stop()
    received = Counter(d.message_id for d in handler.received)
    assert len(received) == len(to_send) and set(received.values()) == {1}
    letters = [r for r in history_letters(config) if r.transport == "smtp"]
    assert {r.message_id for r in letters} == set(received)
    assert {r.status for r in letters} == {"sent"}
