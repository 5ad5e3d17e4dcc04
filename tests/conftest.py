"""Shared fixtures: real SQLite and PostgreSQL databases, a real SMTP server on loopback."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from cobranca.demo import write_demo_database

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
        "layouts": layouts if layouts is not None else LAYOUTS,
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
