"""SMTP faults, injected by a scripted aiosmtpd server, and what the runner makes of each.

The server follows a per-test script: each SMTP command (MAIL, RCPT, DATA) takes the next action
from its own queue — a reply such as "450 ...", a reply and then a closed connection (421), a
dropped connection with no reply, or a stall longer than the client's timeout — and behaves
normally once its queue is empty. Addresses can also be refused for good. The server keeps every
message data it got (``copies``, even those it then refused or never answered) apart from the
ones it accepted with 250 (``received``), so "delivered once" and "the server got it once" are
both checked against the wire, not against the history.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from cobranca import cli
from cobranca.config import Config, load_config
from cobranca.history import HistoryStore, LetterRecord
from cobranca.models import LetterStatus
from cobranca.runner import RunReport, run_layouts
from cobranca.scheduler import Daemon
from cobranca.summary import format_text
from conftest import AS_OF, LAYOUTS, ReceivedMail, config_data, free_port, write_config

# The demo's first letter of `primeiro-aviso` (customers are delivered in code order) and the
# customer with two addresses used for the partial refusal.
FIRST_CUSTOMER = "000002/01"
FIRST_ADDRESS = "contasapagar@serralheria-costa.example"
TWO_ADDRESS_CUSTOMER = "000035/01"
REFUSED_OF_TWO = "fiscal@oficina-mecanica-goncalves.example"
KEPT_OF_TWO = "contato@oficina-mecanica-goncalves.example"
DEMO_LETTERS = 11  # e-mailed letters of primeiro-aviso in the demo (one more goes to print)


# --- the scripted server --------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    """Close the connection without any reply."""


@dataclass(frozen=True)
class Stall:
    """Answer nothing for ``seconds`` (the client's timeout should fire first)."""

    seconds: float


OK = None  # behave normally
DROP = Drop()
Action = str | Drop | Stall | None  # a str is the reply; one starting "421" also closes


@dataclass
class FaultyHandler:
    script: dict[str, list[Action]] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)  # RCPT address → reply, every time
    received: list[ReceivedMail] = field(default_factory=list)  # accepted with 250
    copies: list[EmailMessage] = field(default_factory=list)  # every message data that came in
    commands: list[tuple[str, str, str]] = field(default_factory=list)  # (command, arg, outcome)
    connections: int = 0
    on_accept: Callable[[EmailMessage], None] | None = None

    def _next(self, command: str) -> Action:
        queue = self.script.get(command)
        return queue.pop(0) if queue else OK

    async def _misbehave(self, server: Any, command: str, arg: str, action: Action) -> str | None:
        """The reply to give (None: the normal one); never returns for a drop or a 421."""
        outcome = "ok" if action is None else str(action)
        self.commands.append((command, arg, outcome))
        if isinstance(action, Stall):
            await asyncio.sleep(action.seconds)
            return None
        if isinstance(action, Drop) or (isinstance(action, str) and action.startswith("421")):
            if isinstance(action, str):
                await server.push(action)
            server.transport.close()
            await asyncio.sleep(30)  # cancelled as soon as the connection is gone
        return action  # type: ignore[return-value]

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = await self._misbehave(server, "MAIL", address, self._next("MAIL"))
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        action = self._next("RCPT")
        if action is None and address in self.refuse:
            action = self.refuse[address]
        reply = await self._misbehave(server, "RCPT", address, action)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        self.copies.append(message)  # type: ignore[arg-type]
        reply = await self._misbehave(server, "DATA", message_id(message), self._next("DATA"))
        if reply is not None:
            return reply
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        if self.on_accept is not None:
            self.on_accept(message)  # type: ignore[arg-type]
        return "250 2.0.0 Message accepted for delivery"

    # Views for the assertions.

    def tries(self, command: str, arg: str | None = None) -> int:
        return sum(1 for c, a, _ in self.commands if c == command and arg in (None, a))

    def received_ids(self) -> Counter[str]:
        return Counter(message_id(m.message) for m in self.received)

    def copy_ids(self) -> Counter[str]:
        return Counter(message_id(m) for m in self.copies)


def message_id(message: Any) -> str:
    return str(message["Message-ID"]).strip()


@dataclass
class FaultyServer:
    host: str
    port: int
    handler: FaultyHandler
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def faulty_server() -> Iterator[FaultyServer]:
    server = FaultyServer("127.0.0.1", free_port(), FaultyHandler())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class FakeTime:
    """A monotonic clock that only moves when something sleeps (or a test moves it)."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False  # never a stop


# --- config and history helpers -----------------------------------------------------------


def fault_config(
    tmp_path: Path,
    source_url: str,
    server: FaultyServer,
    name: str = "c.yaml",
    *,
    timeout: float = 5,
    daemon: dict[str, Any] | None = None,
    **delivery: Any,
) -> Config:
    """primeiro-aviso only, over SMTP to ``server``; ``delivery`` overrides delivery settings."""
    data = config_data(
        source_url=source_url,
        history_url=f"sqlite:///{tmp_path / 'history.db'}",
        layouts=LAYOUTS[1:],
    )
    if daemon is not None:
        data["daemon"] = daemon
    data["delivery"]["transport"] = "smtp"
    data["delivery"]["smtp"] = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "timeout_seconds": timeout,
    }
    data["delivery"].update(delivery)
    return load_config(write_config(tmp_path / name, data))


def letters(config: Config, status: LetterStatus | None = None) -> dict[str, LetterRecord]:
    """E-mailed letters by customer 'code/store'."""
    history = HistoryStore(config.history.engine_url())
    try:
        records = history.letters(status=status)
    finally:
        history.close()
    return {f"{r.customer_code}/{r.customer_store}": r for r in records if r.transport == "smtp"}


def events(config: Config, letter_id: int) -> list[str]:
    history = HistoryStore(config.history.engine_url())
    try:
        return [e.status for e in history.events(letter_id)]
    finally:
        history.close()


def run(config: Config, time: FakeTime | None = None) -> RunReport:
    time = time or FakeTime()
    return run_layouts(config, as_of=AS_OF, clock=time.clock, sleep=time.sleep)


def assert_each_once(server: FaultyServer, config: Config) -> None:
    """Every e-mailed letter is sent, and the server accepted each exactly once."""
    by_customer = letters(config)
    assert len(by_customer) == DEMO_LETTERS
    assert {r.status for r in by_customer.values()} == {"sent"}
    accepted = server.handler.received_ids()
    assert set(accepted.values()) == {1}
    assert set(accepted) == {r.message_id for r in by_customer.values()}


# --- temporary refusals ---------------------------------------------------------------------


def test_rcpt_450_twice_then_accepted_is_sent_on_the_third_try_after_backoff(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["RCPT"] = ["450 4.2.1 Mailbox busy, try later"] * 2
    config = fault_config(tmp_path, demo_sqlite, faulty_server, retry_backoff_seconds=5)
    time = FakeTime()
    report = run(config, time)

    assert report.ok, report.as_dict()
    assert report.results[0].sent == DEMO_LETTERS
    assert time.sleeps == [5, 10]  # b, then 2b; nothing else slept
    assert handler.tries("RCPT", FIRST_ADDRESS) == 3  # two refusals, the third accepted
    assert handler.tries("MAIL") == DEMO_LETTERS + 2
    first = letters(config)[FIRST_CUSTOMER]
    assert first.status == "sent" and first.reason == ""
    assert first.server_reply.startswith("250")
    assert first.attempts == 1  # one claim; the three tries happened inside it
    assert handler.copy_ids()[first.message_id] == 1  # never sent before the RCPT went through
    assert_each_once(faulty_server, config)


def test_data_451_every_time_fails_temporarily_and_the_next_run_sends_it_once(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["DATA"] = ["451 4.3.0 Queue full, try again later"] * 3
    config = fault_config(tmp_path, demo_sqlite, faulty_server, retry_backoff_seconds=1)
    time = FakeTime()
    report = run(config, time)
    result = report.results[0]

    assert not report.ok and result.failed == 1 and not result.error  # the layout went on
    assert result.sent == DEMO_LETTERS - 1
    assert time.sleeps == [1, 2]  # backoff between the three tries, none after the last
    failed = letters(config)[FIRST_CUSTOMER]
    assert failed.status == "failed_temporary"
    assert "451 4.3.0 Queue full, try again later" in failed.reason
    assert "after 3 tries" in failed.reason
    assert not failed.needs_print
    assert handler.copy_ids()[failed.message_id] == 3  # the server got it and refused it 3x
    assert handler.received_ids()[failed.message_id] == 0
    assert result.failures.entries == [(FIRST_CUSTOMER, failed.reason)]

    # Next run, same day, the server healthy again: planned again and sent exactly once.
    again = run(config)
    assert again.ok, again.as_dict()
    assert again.results[0].planned == 1 and again.results[0].sent == 1
    retried = letters(config)[FIRST_CUSTOMER]
    assert retried.id == failed.id and retried.status == "sent"
    assert retried.attempts == 2
    assert events(config, retried.id) == [
        "planned", "sending", "failed_temporary", "planned", "sending", "sent",
    ]  # fmt: skip
    accepted_for_first = [m for m in handler.received if FIRST_ADDRESS in m.rcpt_tos]
    assert len(accepted_for_first) == 1
    assert message_id(accepted_for_first[0].message) == retried.message_id
    assert_each_once(faulty_server, config)


def test_mail_421_service_closing_reconnects_and_sends(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["MAIL"] = ["421 4.3.2 Service shutting down, closing channel"]
    config = fault_config(tmp_path, demo_sqlite, faulty_server)
    report = run(config)

    assert report.ok, report.as_dict()
    assert report.results[0].sent == DEMO_LETTERS
    assert handler.connections == 2  # the closed connection was replaced
    assert_each_once(faulty_server, config)


def test_mail_421_costs_one_try_only(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["MAIL"] = ["421 4.3.2 Service shutting down, closing channel"]
    config = fault_config(tmp_path, demo_sqlite, faulty_server, retry_attempts=2)
    time = FakeTime()
    report = run(config, time)

    assert report.ok, report.as_dict()
    assert len(time.sleeps) == 1  # 421, reconnect, sent
    assert_each_once(faulty_server, config)


# --- permanent refusals ---------------------------------------------------------------------


def test_rcpt_550_for_the_only_recipient_fails_permanently_and_needs_print(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.refuse[FIRST_ADDRESS] = (
        "550 5.1.1 <contasapagar@serralheria-costa.example>: no such user"
    )
    config = fault_config(tmp_path, demo_sqlite, faulty_server, retry_backoff_seconds=3)
    time = FakeTime()
    report = run(config, time)
    result = report.results[0]

    assert not report.ok and result.failed == 1 and not result.error
    assert result.sent == DEMO_LETTERS - 1
    assert time.sleeps == []  # no retry, so no backoff
    assert handler.tries("RCPT", FIRST_ADDRESS) == 1
    record = letters(config)[FIRST_CUSTOMER]
    assert record.status == "failed_permanent" and record.needs_print
    assert record.attempts == 1
    assert "550 5.1.1" in record.reason and "printed letter" in record.reason
    assert handler.copy_ids()[record.message_id] == 0  # the data never went out
    assert all(FIRST_ADDRESS not in m.rcpt_tos for m in handler.received)
    assert events(config, record.id) == ["planned", "sending", "failed_permanent"]


def test_rcpt_550_for_one_of_two_recipients_sends_to_the_other(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.refuse[REFUSED_OF_TWO] = "550 5.1.1 Recipient address rejected: unknown user"
    config = fault_config(tmp_path, demo_sqlite, faulty_server)
    report = run(config)

    assert report.ok, report.as_dict()
    record = letters(config)[TWO_ADDRESS_CUSTOMER]
    assert record.status == "sent" and not record.needs_print
    assert REFUSED_OF_TWO in record.reason
    assert "550 5.1.1 Recipient address rejected: unknown user" in record.reason
    assert KEPT_OF_TWO not in record.reason
    [mail] = [m for m in handler.received if message_id(m.message) == record.message_id]
    assert mail.rcpt_tos == [KEPT_OF_TWO]
    assert handler.tries("RCPT", REFUSED_OF_TWO) == 1
    assert_each_once(faulty_server, config)


def test_data_554_final_reply_fails_permanently(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["DATA"] = ["554 5.7.1 Message rejected as spam"]
    config = fault_config(tmp_path, demo_sqlite, faulty_server, retry_backoff_seconds=3)
    time = FakeTime()
    report = run(config, time)

    assert not report.ok and report.results[0].failed == 1
    assert report.results[0].sent == DEMO_LETTERS - 1
    assert time.sleeps == []
    record = letters(config)[FIRST_CUSTOMER]
    assert record.status == "failed_permanent" and record.needs_print
    assert "554 5.7.1 Message rejected as spam" in record.reason
    assert handler.copy_ids()[record.message_id] == 1  # tried once, never again
    assert handler.received_ids()[record.message_id] == 0


# --- ambiguous: the data went out, no final reply ---------------------------------------------


def test_connection_dropped_after_the_data_is_ambiguous_never_resent_and_exits_1(
    demo_sqlite: str,
    faulty_server: FaultyServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = faulty_server.handler
    handler.script["DATA"] = [DROP]
    config = fault_config(tmp_path, demo_sqlite, faulty_server, retry_backoff_seconds=0)
    argv = ["run", "primeiro-aviso", "--as-of", AS_OF.isoformat(), "--config", str(config.path)]

    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "ambiguous:    1" in out and "AMBIGUOUS" in out
    record = letters(config)[FIRST_CUSTOMER]
    assert record.status == "ambiguous"
    assert "connection lost after the message data was sent" in record.reason
    assert record.sent_at is None and not record.needs_print
    assert handler.copy_ids()[record.message_id] == 1  # the server got exactly one copy
    assert handler.received_ids()[record.message_id] == 0
    assert handler.connections == 2  # the next letter reconnected
    assert len(handler.received) == DEMO_LETTERS - 1

    # The next run does not resend it, and has nothing to fail on.
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert letters(config)[FIRST_CUSTOMER].status == "ambiguous"
    assert handler.copy_ids()[record.message_id] == 1
    assert len(handler.copies) == DEMO_LETTERS


# --- stalls (timeout_seconds 1) -----------------------------------------------------------------


def test_stall_on_rcpt_times_out_and_is_retried(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["RCPT"] = [Stall(4)]
    config = fault_config(tmp_path, demo_sqlite, faulty_server, timeout=1, retry_backoff_seconds=2)
    time = FakeTime()
    report = run(config, time)

    assert report.ok, report.as_dict()
    assert time.sleeps == [2]  # one retry
    assert handler.tries("RCPT", FIRST_ADDRESS) == 2
    assert handler.connections == 2  # the stalled connection was abandoned
    first = letters(config)[FIRST_CUSTOMER]
    assert first.status == "sent"
    assert handler.copy_ids()[first.message_id] == 1
    assert_each_once(faulty_server, config)


def test_stall_after_the_data_is_ambiguous(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    handler.script["DATA"] = [Stall(4)]
    config = fault_config(tmp_path, demo_sqlite, faulty_server, timeout=1, retry_backoff_seconds=2)
    time = FakeTime()
    report = run(config, time)
    result = report.results[0]

    assert not report.ok and result.ambiguous == 1 and result.failed == 0
    assert result.sent == DEMO_LETTERS - 1
    assert time.sleeps == []  # never retried
    record = letters(config)[FIRST_CUSTOMER]
    assert record.status == "ambiguous" and "timed out" in record.reason
    assert result.ambiguities.entries == [(FIRST_CUSTOMER, record.reason)]
    assert handler.copy_ids()[record.message_id] == 1
    assert handler.received_ids()[record.message_id] == 0


# --- server down ------------------------------------------------------------------------------


def test_server_down_leaves_letters_planned_and_the_next_run_sends_all_once(
    demo_sqlite: str, tmp_path: Path
) -> None:
    server = FaultyServer("127.0.0.1", free_port(), FaultyHandler())  # not started yet
    config = fault_config(tmp_path, demo_sqlite, server, retry_backoff_seconds=1)
    time = FakeTime()
    report = run(config, time)
    result = report.results[0]

    assert not report.ok
    assert result.sent == 0 and result.failed == 1
    assert result.error.startswith("SMTP unreachable after 3 tries")
    assert time.sleeps == [1, 2]
    by_customer = letters(config)
    failed = by_customer.pop(FIRST_CUSTOMER)
    assert failed.status == "failed_temporary"
    assert failed.reason.startswith("SMTP unreachable after 3 tries: cannot connect to SMTP")
    assert {r.status for r in by_customer.values()} == {"planned"}
    assert result.left_planned == len(by_customer) == DEMO_LETTERS - 1
    for record in by_customer.values():
        assert "not sent yet: SMTP unreachable" in record.reason
        assert "the next run sends it" in record.reason

    server.start()
    try:
        again = run(config)
        assert again.ok, again.as_dict()
        assert again.results[0].sent == DEMO_LETTERS
        assert again.results[0].left_planned == 0
        assert_each_once(server, config)
        assert len(server.handler.copies) == DEMO_LETTERS
    finally:
        server.stop()


# --- pacing and caps --------------------------------------------------------------------------


def test_rate_per_minute_spaces_letters(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    time = FakeTime()
    accepted_at: list[float] = []

    def sending_takes_four_seconds(message: EmailMessage) -> None:
        accepted_at.append(time.now)
        time.now += 4

    faulty_server.handler.on_accept = sending_takes_four_seconds
    config = fault_config(tmp_path, demo_sqlite, faulty_server, rate_per_minute=6)
    report = run(config, time)

    assert report.ok, report.as_dict()
    assert len(accepted_at) == DEMO_LETTERS
    gaps = [later - earlier for earlier, later in itertools.pairwise(accepted_at)]
    assert gaps == pytest.approx([10.0] * (DEMO_LETTERS - 1))
    # The first letter goes at once; each later one waits what is left of its 10 s.
    assert len(time.sleeps) == DEMO_LETTERS - 1
    assert sum(time.sleeps) == pytest.approx(6.0 * (DEMO_LETTERS - 1))


def test_no_rate_limit_never_sleeps(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    time = FakeTime()
    faulty_server.handler.on_accept = lambda message: setattr(time, "now", time.now + 4)
    config = fault_config(tmp_path, demo_sqlite, faulty_server)
    assert config.delivery.rate_per_minute is None
    report = run(config, time)

    assert report.ok, report.as_dict()
    assert report.results[0].sent == DEMO_LETTERS
    assert time.sleeps == []


def test_max_letters_per_run_leaves_the_rest_planned_for_later_runs(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    config = fault_config(tmp_path, demo_sqlite, faulty_server, max_letters_per_run=3)
    first = run(config).results[0]

    assert first.ok and first.sent == 3
    assert first.planned == DEMO_LETTERS and first.left_planned == DEMO_LETTERS - 3
    waiting = letters(config, LetterStatus.PLANNED)
    assert len(waiting) == DEMO_LETTERS - 3
    assert all("max_letters_per_run" in r.reason for r in waiting.values())
    assert len(faulty_server.handler.received) == 3

    sent_per_run = [first.sent]
    while len(sent_per_run) < 10:
        report = run(config)
        result = report.results[0]
        assert result.ok, result.as_dict()
        assert f"carried over: {DEMO_LETTERS - sum(sent_per_run)}  (" in format_text(report)
        # What earlier runs left planned is this run's to send: carried over, not "already
        # claimed" (which counts only the letters that went, or await print).
        already = sum(sent_per_run)
        assert (result.planned, result.carried_over) == (0, DEMO_LETTERS - already)
        assert result.skipped["already_claimed"] == already + first.print_needed
        sent_per_run.append(result.sent)
        if not result.left_planned:
            break
    assert sent_per_run == [3, 3, 3, 2]
    assert_each_once(faulty_server, config)
    # One more run finds nothing to send.
    assert run(config).results[0].sent == 0
    assert len(faulty_server.handler.copies) == DEMO_LETTERS


# --- títulos paid between plan and send -------------------------------------------------------


def _pay(source_url: str, recnos: list[int]) -> None:
    engine = create_engine(source_url)
    with engine.begin() as connection:
        for recno in recnos:
            changed = connection.execute(
                text("UPDATE se1010 SET e1_saldo = 0 WHERE r_e_c_n_o_ = :recno"), {"recno": recno}
            ).rowcount
            assert changed == 1
    engine.dispose()


def test_titles_paid_after_planning_are_left_out_of_the_letter(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    handler = faulty_server.handler
    capped = fault_config(
        tmp_path, demo_sqlite, faulty_server, "capped.yaml", max_letters_per_run=1
    )
    first = run(capped).results[0]
    assert first.planned == DEMO_LETTERS and first.sent == 1

    planned = letters(capped, LetterStatus.PLANNED)
    assert len(planned) == DEMO_LETTERS - 1
    all_paid = next(r for r in planned.values() if len(r.titles) == 1)
    half_paid = next(r for r in planned.values() if len(r.titles) == 2)
    paid_title, open_title = half_paid.titles
    _pay(demo_sqlite, [t.recno for t in all_paid.titles] + [paid_title.recno])

    config = fault_config(tmp_path, demo_sqlite, faulty_server)
    second = run(config).results[0]
    assert second.ok, second.as_dict()
    assert second.sent == DEMO_LETTERS - 2
    assert second.skipped["paid_since_planned"] == 1

    after = letters(config)
    skipped = after[f"{all_paid.customer_code}/{all_paid.customer_store}"]
    assert skipped.status == "skipped"
    assert "paid" in skipped.reason
    assert handler.copy_ids()[all_paid.message_id] == 0
    assert events(config, skipped.id)[-1] == "skipped"

    partial = after[f"{half_paid.customer_code}/{half_paid.customer_store}"]
    assert partial.status == "sent"
    assert [t.title_key for t in partial.titles] == [open_title.title_key]
    assert partial.total == open_title.balance
    [mail] = [m for m in handler.received if message_id(m.message) == half_paid.message_id]
    html = mail.message.get_body(("html",)).get_content()
    plain = mail.message.get_body(("plain",)).get_content()
    open_number = open_title.title_key.split("|")[2]
    paid_number = paid_title.title_key.split("|")[2]
    assert open_number in html and open_number in plain
    assert paid_number not in html and paid_number not in plain

    # Everyone else got exactly one letter; the fully paid customer none.
    sent_ids = {r.message_id for r in after.values() if r.status == "sent"}
    assert len(sent_ids) == DEMO_LETTERS - 1
    assert set(handler.received_ids()) == sent_ids
    assert set(handler.received_ids().values()) == {1}


# --- a daemon sharing another's run --------------------------------------------------------


# The daemon takes its day from the clock: the demo's, whose letters DEMO_LETTERS counts (on
# another day other títulos are in the layout's window: one fewer e-mailed on 2026-12-06).
@time_machine.travel(
    datetime(AS_OF.year, AS_OF.month, AS_OF.day, 9, tzinfo=ZoneInfo("America/Sao_Paulo")), tick=True
)
def test_a_daemon_sharing_a_run_alerts_the_operator_about_its_own_failed_letters(
    demo_sqlite: str, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    today = AS_OF
    holder = fault_config(tmp_path, demo_sqlite, faulty_server, "holder.yaml",
                          max_letters_per_run=1)  # fmt: skip
    assert run_layouts(holder, as_of=today).results[0].left_planned == DEMO_LETTERS - 1
    history = HistoryStore(holder.history.engine_url())
    try:  # today's slot, as a daemon on another host still running it holds it
        assert history.claim_slot("primeiro-aviso", today, stale_after=timedelta(hours=1))
        with history.engine.begin() as connection:
            connection.execute(text("UPDATE cobranca_run_slots SET holder = 'elsewhere:1:1'"))
    finally:
        history.close()
    unlucky = next(iter(letters(holder, LetterStatus.PLANNED).values()))
    faulty_server.handler.refuse[unlucky.recipients.split(", ")[0]] = "550 5.1.1 no such user"
    sharer = fault_config(tmp_path, demo_sqlite, faulty_server, "sharer.yaml",
                          daemon={"alert_email": "operador@empresa.example"})  # fmt: skip
    assert sharer.path is not None

    report = Daemon(sharer.path).run_layout("primeiro-aviso")

    assert report is not None
    result = report.results[0]
    assert (result.sent, result.failed) == (DEMO_LETTERS - 2, 1)
    alerts = [m for m in faulty_server.handler.received
              if m.rcpt_tos == ["operador@empresa.example"]]  # fmt: skip
    (alert,) = alerts
    assert "share" in str(alert.message["Subject"]) and "finished with problems" in str(
        alert.message["Subject"]
    )
    assert "failed 1" in alert.message.get_content()
