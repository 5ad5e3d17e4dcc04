"""Shared fixtures: real SQLite and PostgreSQL databases, a real SMTP server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from sqlalchemy import MetaData, Table, create_engine, func, select, text

from cobranca.demo import pad, write_demo_database
from cobranca.protheus import format_date, sa1_table, se1_table

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
AS_OF = date(2026, 12, 4)  # a Friday
PG_ADMIN_URL = os.environ.get(
    "COBRANCA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class RecordingHandler:
    """aiosmtpd handler that keeps every message it accepts."""

    received: list[ReceivedMail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        self.received.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message)  # type: ignore[arg-type]
        )
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler

    @property
    def received(self) -> list[ReceivedMail]:
        return self.handler.received


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    return None


@pytest.fixture
def postgres_url() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases, all dropped at the end of the test."""
    reason = postgres_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"cobranca_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    try:
        yield make
    finally:
        with admin.connect() as connection:
            for name in created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def demo_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'protheus.db'}"
    write_demo_database(url, customers=40, seed=7, as_of=AS_OF)
    return url


LAYOUTS: list[dict[str, Any]] = [
    {
        "name": "lembrete-vencimento",
        "schedule": "0 8 * * mon-fri",
        "template": "lembrete-vencimento",
        "subject": "Lembrete de vencimento – {{ creditor.name }}",
        "selection": {"days": {"min": -3, "max": -3}},
        "cadence_days": 3,
    },
    {
        "name": "primeiro-aviso",
        "schedule": "0 9 * * mon-fri",
        "template": "primeiro-aviso",
        "subject": "Aviso de título em aberto – {{ customer.name }}",
        "selection": {"days": {"min": 1, "max": 15}},
        "cadence_days": 15,
    },
]


def config_data(
    *,
    source_url: str,
    history_url: str,
    smtp: SmtpServer | None = None,
    outbox: Path | None = None,
    layouts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    delivery: dict[str, Any] = {
        "from_address": "cobranca@credora.example.com.br",
        "from_name": "Financeiro Credora",
        "reply_to": "financeiro@credora.example.com.br",
        "retry_backoff_seconds": 0,  # tests that need the backoff set their own clock
    }
    if smtp is not None:
        delivery["transport"] = "smtp"
        delivery["smtp"] = {
            "host": smtp.host,
            "port": smtp.port,
            "security": "none",
            "timeout_seconds": 10,
        }
    else:
        delivery["transport"] = "outbox"
        delivery["outbox"] = {"directory": str(outbox)}
    return {
        "timezone": "America/Sao_Paulo",
        "templates_dir": str(TEMPLATES),
        "source": {"url": source_url, "company": "01"},
        "history": {"url": history_url},
        "delivery": delivery,
        "creditor": {
            "name": "Credora Indústria Ltda",
            "tax_id": "11444777000161",
            "address": "Avenida Paulista, 1000",
            "city": "São Paulo",
            "state": "SP",
            "zip_code": "01310100",
            "phone": "(11) 3000-0000",
            "email": "financeiro@credora.example.com.br",
        },
        # Tests run at any hour: the calendar is off here and exercised in test_calendar.py.
        "calendar": {"business_days_only": False, "send_window": None},
        "layouts": layouts if layouts is not None else LAYOUTS,
    }


def offline_config_data(
    tmp_path: Path, layouts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """config_data for what reads no ERP (PDFs, status...): its database does not exist; a
    fresh SQLite history and an outbox in ``tmp_path``."""
    return config_data(
        source_url=f"sqlite:///{tmp_path / 'none.db'}",
        history_url=f"sqlite:///{tmp_path / 'history.db'}",
        outbox=tmp_path / "outbox",
        layouts=layouts,
    )


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# 10 days before AS_OF: the default due date of ErpWriter títulos.
DUE = format_date(AS_OF - timedelta(days=10))


def _row(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """A full row: every CHAR column space-padded to its width, numbers zero by default."""
    row = {}
    for column in table.columns:
        value = values.get(column.key)
        length = getattr(column.type, "length", None)
        if length:
            row[column.key] = pad(value or "", length)
        else:
            row[column.key] = value if value is not None else 0
    return row


@dataclass
class ErpWriter:
    """Adds customers and títulos to the demo database."""

    url: str

    def __post_init__(self) -> None:
        metadata = MetaData()
        self.se1 = se1_table(metadata, "01")
        self.sa1 = sa1_table(metadata, "01")
        self.titles = 0

    def customer(
        self,
        code: str,
        name: str,
        emails: str,
        *titles: dict[str, Any],
        person: str = "J",
        tax_id: str | None = None,
    ) -> list[str]:
        """One customer with its títulos (overrides of a good overdue one); their SE1 keys."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as connection:
                sa1_recno = connection.execute(select(func.max(self.sa1.c.R_E_C_N_O_))).scalar()
                se1_recno = connection.execute(select(func.max(self.se1.c.R_E_C_N_O_))).scalar()
                connection.execute(self.sa1.insert(), [_row(self.sa1, {
                    "A1_COD": code, "A1_LOJA": "01", "A1_NOME": name, "A1_NREDUZ": name[:20],
                    "A1_PESSOA": person,
                    "A1_CGC": tax_id or ("11144477735" if person == "F" else "11444777000161"),
                    "A1_EMAIL": emails,
                    "A1_END": "Rua XV de Novembro, 10", "A1_BAIRRO": "Centro",
                    "A1_MUN": "São Paulo", "A1_EST": "SP", "A1_CEP": "01001000",
                    "A1_MSBLQL": "2", "A1_RISCO": "A", "D_E_L_E_T_": " ",
                    "R_E_C_N_O_": sa1_recno + 1,
                })])  # fmt: skip
                rows, keys = [], []
                for offset, overrides in enumerate(titles, start=1):
                    self.titles += 1
                    values = {
                        "E1_FILIAL": "01", "E1_PREFIXO": "BAD", "E1_NUM": f"{self.titles:09d}",
                        "E1_PARCELA": "", "E1_TIPO": "NF", "E1_CLIENTE": code, "E1_LOJA": "01",
                        "E1_NOMCLI": name[:20], "E1_EMISSAO": DUE, "E1_VENCTO": DUE,
                        "E1_VENCREA": DUE, "E1_BAIXA": "", "E1_VALOR": 150.0, "E1_SALDO": 150.0,
                        "E1_SITUACA": "0", "E1_MOEDA": 1, "D_E_L_E_T_": " ",
                        "R_E_C_N_O_": se1_recno + offset, **overrides,
                    }  # fmt: skip
                    rows.append(_row(self.se1, values))
                    keys.append(f"01|BAD|{values['E1_NUM']}||{values['E1_TIPO'].strip()}|{code}|01")
                connection.execute(self.se1.insert(), rows)
            return keys
        finally:
            engine.dispose()


def customers_owed_an_email(config_path: Path, as_of: date) -> set[str]:
    """Who the config's first layout would e-mail on ``as_of`` (CODE/STORE), read as a run would."""
    from cobranca.config import load_config
    from cobranca.models import Disposition
    from cobranca.plan import plan_letter
    from cobranca.source import ProtheusSource

    config = load_config(config_path)
    layout = config.layouts[0]
    source = ProtheusSource(config.source)
    try:
        return {
            group.customer.key
            for group in source.customers_titles(layout.selection, as_of)
            if plan_letter(group, layout, as_of, None).disposition is Disposition.SEND
        }
    finally:
        source.close()


def assert_audit_ok(history_url: str) -> None:
    """The history's audit chain verifies and every letter row matches its last snapshot."""
    from cobranca.audit import verify
    from cobranca.history import HistoryStore

    history = HistoryStore(history_url)
    try:
        result = verify(history)
    finally:
        history.close()
    assert result.ok, result.problems


def three_senders_one_killed(
    command: list[str], wait: Callable[[], None], *, timeout: float = 180, **popen: Any
) -> tuple[int, list[tuple[int, bytes, bytes]]]:
    """Start ``command`` three times, SIGKILL the first once ``wait`` returns, let the others
    finish: the killed one's pid, and each survivor's exit code, stdout and stderr."""
    senders = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, **popen)
        for _ in range(3)
    ]
    try:
        wait()
        senders[0].send_signal(signal.SIGKILL)
        outputs = [sender.communicate(timeout=timeout) for sender in senders[1:]]
    finally:
        for sender in senders:
            if sender.poll() is None:
                sender.kill()
    assert senders[0].wait(timeout=10) == -signal.SIGKILL
    codes = [sender.returncode for sender in senders[1:]]
    return senders[0].pid, [(code, *output) for code, output in zip(codes, outputs, strict=True)]


def insert_day_of_letters(
    history: Any,
    letters: int,
    *,
    status: str = "planned",
    sent_at: datetime | None = None,
    as_of: date = AS_OF,
) -> list[tuple[str, str]]:
    """``letters`` letters of one layout and day in ``status``, inserted at once as a big run
    leaves them; their customers. No ANALYZE: the statistics are a growing table's, i.e. none."""
    from cobranca.history import LetterRecord

    run_id = history.start_run("primeiro-aviso", as_of, "manual", "test")
    now = datetime.now(UTC)
    rows = [
        {"run_id": run_id, "layout": "primeiro-aviso", "as_of": as_of,
         "customer_code": f"{n:06d}", "customer_store": "01", "customer_name": "x",
         "recipients": "a@example.com", "subject": "", "message_id": f"<{n}@test>",
         "titles_digest": "", "transport": "outbox", "status": status, "reason": "",
         "needs_print": False, "operator": "", "rule": "", "templates_digest": "",
         "raw_message": "", "server_reply": "", "total": Decimal("1.00"), "attempts": 0,
         "holder": "", "created_at": now, "updated_at": now, "sent_at": sent_at}
        for n in range(letters)
    ]  # fmt: skip
    with history.engine.begin() as connection:
        connection.execute(LetterRecord.__table__.insert(), rows)
    return [(row["customer_code"], row["customer_store"]) for row in rows]


def sqlite_query_plan(engine: Any, sql: str, params: Any) -> list[str]:
    """The steps of SQLite's EXPLAIN QUERY PLAN for a statement a command sent."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
    return [row[3] for row in rows]
