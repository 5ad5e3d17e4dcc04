"""Passwords come from the environment and go only to the server that asked for them.

The SMTP password (password_env) and a PostgreSQL source's password (password_env; trust auth
accepts any) must never show in logs (DEBUG included), the text and JSON summaries, the history
database, the errors of a wrong database name or a refused login, or `cobranca check` output
for a config that embeds a password in its URL. Each secret is also searched for in the forms a
leak would take: URL-quoted, and base64 as SMTP AUTH sends it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import create_engine, inspect, text

from cobranca.cli import main
from cobranca.config import load_config
from cobranca.demo import write_demo_database
from cobranca.runner import run_layouts
from cobranca.summary import format_json, format_text
from conftest import AS_OF, LAYOUTS, RecordingHandler, config_data, free_port, write_config

USER = "cobranca-mailer"
SMTP_PASSWORD = "smtp-Pw:7f3a/9c@x%21"
DB_PASSWORD = "db-Pw:51e2/b8@q#z"
SMTP_ENV = "COBRANCA_TEST_SMTP_PASSWORD"
DB_ENV = "COBRANCA_TEST_DB_PASSWORD"
EMBEDDED = "Hunter2-Embedded-Secret"

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def leak_forms(secret: str, user: str = USER) -> list[str]:
    """The secret as it would appear if leaked raw, in a URL, or from an SMTP AUTH exchange."""
    b64 = [base64.b64encode(s.encode()).decode() for s in (secret, f"\0{user}\0{secret}")]
    return [secret, quote(secret, safe=""), quote_plus(secret), *b64]


def assert_hidden(secret: str, **outputs: str) -> None:
    for name, output in outputs.items():
        for form in leak_forms(secret):
            assert form not in output, f"the password shows in {name} (as {form!r})"


def product_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record at DEBUG, but the test's own SMTP server's (aiosmtpd logs AUTH lines)."""
    return "\n".join(
        caplog.handler.format(record)
        for record in caplog.records
        if not record.name.startswith("mail.log")
    )


def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQLAlchemy pins itself to WARNING


def dump_database(url: str) -> str:
    """Every row of every table, as text."""
    engine = create_engine(url)
    try:
        lines = []
        with engine.connect() as connection:
            for table in inspect(connection).get_table_names():
                lines.append(f"== {table}")
                lines += [
                    repr(tuple(row)) for row in connection.execute(text(f"SELECT * FROM {table}"))
                ]
        return "\n".join(lines)
    finally:
        engine.dispose()


@dataclass
class AuthHandler(RecordingHandler):
    """Records messages and whether each came over an authenticated session."""

    accept_login: bool = True
    attempts: list[tuple[bytes, bytes]] = field(default_factory=list)
    authenticated: list[bool] = field(default_factory=list)

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> Any:
        if isinstance(data, LoginPassword):
            self.attempts.append((data.login, data.password))
        ok = (
            self.accept_login
            and isinstance(data, LoginPassword)
            and (data.login == USER.encode() and data.password == SMTP_PASSWORD.encode())
        )
        # handled=False on failure, or the client waits for its timeout.
        return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.authenticated.append(bool(session.authenticated))
        return await super().handle_DATA(server, session, envelope)


def _serve(handler: AuthHandler) -> Iterator[tuple[AuthHandler, int]]:
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, auth_required=True,
        auth_require_tls=False, authenticator=handler.authenticator,
    )  # fmt: skip
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def auth_smtp() -> Iterator[tuple[AuthHandler, int]]:
    yield from _serve(AuthHandler())


@pytest.fixture
def refusing_smtp() -> Iterator[tuple[AuthHandler, int]]:
    yield from _serve(AuthHandler(accept_login=False))


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMTP_ENV, SMTP_PASSWORD)
    monkeypatch.setenv(DB_ENV, DB_PASSWORD)


def _config(
    tmp_path: Path, *, source_url: str, history_url: str, smtp_port: int, db_password: bool
) -> Path:
    data = config_data(source_url=source_url, history_url=history_url, layouts=LAYOUTS[1:])
    data["delivery"]["transport"] = "smtp"
    data["delivery"]["smtp"] = {
        "host": "127.0.0.1", "port": smtp_port, "security": "none", "username": USER,
        "password_env": SMTP_ENV, "timeout_seconds": 10,
    }  # fmt: skip
    if db_password:
        for section in ("source", "history"):
            if data[section]["url"].startswith("postgresql"):
                data[section]["password_env"] = DB_ENV
    return write_config(tmp_path / "c.yaml", data)


@pytest.fixture
def pg_source(postgres_url: Callable[[], str]) -> str:
    url = postgres_url()
    write_demo_database(url, customers=40, seed=7, as_of=AS_OF)
    return url


@pytest.mark.postgres
@pytest.mark.usefixtures("secrets_env")
def test_passwords_stay_out_of_logs_summaries_and_the_history(
    pg_source: str,
    postgres_url: Callable[[], str],
    auth_smtp: tuple[AuthHandler, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    debug_logs(caplog)
    handler, port = auth_smtp
    history_url = postgres_url()
    path = _config(tmp_path, source_url=pg_source, history_url=history_url, smtp_port=port,
                   db_password=True)  # fmt: skip
    config = load_config(path)
    # Both passwords really are in use: the source and history URLs carry one, SMTP logs in.
    assert config.source.engine_url().password == DB_PASSWORD
    assert config.history.engine_url().password == DB_PASSWORD

    report = run_layouts(config, as_of=AS_OF)
    assert report.ok, report.as_dict()
    sent = report.results[0].sent
    assert sent > 0 and len(handler.received) == sent
    assert set(handler.authenticated) == {True}
    assert handler.attempts[0] == (USER.encode(), SMTP_PASSWORD.encode())

    assert main(["letters", "--status", "sent", "--config", str(path)]) == 0
    assert main(["run", "--config", str(path), "--as-of", AS_OF.isoformat()]) == 0
    captured = capsys.readouterr()
    assert f"{sent} letter(s) sent" in captured.out
    outputs = {
        "logs": product_logs(caplog),
        "text summary": format_text(report),
        "JSON summary": format_json(report),
        "history database": dump_database(config.history.engine_url()),
        "CLI output": captured.out + captured.err,
    }
    assert "sqlalchemy.engine" in outputs["logs"]  # DEBUG reached the database layer too
    assert_hidden(SMTP_PASSWORD, **outputs)
    assert_hidden(DB_PASSWORD, **outputs)


@pytest.mark.postgres
@pytest.mark.usefixtures("secrets_env")
@pytest.mark.parametrize("wrong", ["source", "history"])
def test_a_wrong_database_name_fails_without_showing_the_password(
    wrong: str,
    pg_source: str,
    postgres_url: Callable[[], str],
    auth_smtp: tuple[AuthHandler, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    debug_logs(caplog)
    handler, port = auth_smtp
    history_url = postgres_url()
    missing = history_url.rsplit("/", 1)[0] + "/cobranca_test_no_such_database"
    urls = {"source_url": pg_source, "history_url": history_url}
    urls[f"{wrong}_url"] = missing
    path = _config(tmp_path, **urls, smtp_port=port, db_password=True)

    code = main(["run", "--config", str(path), "--as-of", AS_OF.isoformat()])
    captured = capsys.readouterr()
    assert code == 1
    assert 'database "cobranca_test_no_such_database" does not exist' in captured.out
    assert handler.received == []
    outputs = {"logs": product_logs(caplog), "CLI output": captured.out + captured.err}
    if wrong == "source":  # the failed run is recorded in the history, with its error
        outputs["history database"] = dump_database(load_config(path).history.engine_url())
        assert "does not exist" in outputs["history database"]
    assert_hidden(DB_PASSWORD, **outputs)
    assert_hidden(SMTP_PASSWORD, **outputs)


@pytest.mark.usefixtures("secrets_env")
def test_a_refused_smtp_login_fails_without_showing_the_password(
    demo_sqlite: str,
    refusing_smtp: tuple[AuthHandler, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    debug_logs(caplog)
    handler, port = refusing_smtp
    history_url = f"sqlite:///{tmp_path / 'h.db'}"
    path = _config(tmp_path, source_url=demo_sqlite, history_url=history_url, smtp_port=port,
                   db_password=False)  # fmt: skip

    for output_format in ("text", "json"):
        code = main(["run", "--config", str(path), "--as-of", AS_OF.isoformat(),
                     "--format", output_format])  # fmt: skip
        assert code == 1
    captured = capsys.readouterr()
    assert handler.received == [] and handler.attempts  # it did try, with the password
    assert handler.attempts[0] == (USER.encode(), SMTP_PASSWORD.encode())
    assert "535" in captured.out and "cannot connect to SMTP" in captured.out
    assert_hidden(
        SMTP_PASSWORD,
        logs=product_logs(caplog),
        cli_output=captured.out + captured.err,
        history_database=dump_database(history_url),
    )


@pytest.mark.parametrize("section", ["source", "history"])
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://cobranca:{EMBEDDED}@db.example/protheus",
        f"postgresql+psycopg://cobranca:{quote(EMBEDDED)}@db.example:5432/protheus",
        f"postgresql+psycopg://cobranca:{EMBEDDED}@db.example:unparseable/protheus",
    ],
    ids=["password", "port", "unparseable"],
)
def test_check_refuses_a_url_with_a_password_without_echoing_it(
    section: str, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data(source_url="sqlite:///protheus.db", history_url="sqlite:///h.db",
                       outbox=tmp_path / "outbox")  # fmt: skip
    data[section]["url"] = url
    path = write_config(tmp_path / "c.yaml", data)
    assert main(["check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{section}.url" in captured.err
    assert EMBEDDED not in captured.out + captured.err
    if "unparseable" not in url:
        assert "contains a password" in captured.err  # says why, without the value


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://cobranca@db.example/protheus?password={EMBEDDED}",
        "mssql+pyodbc:///?odbc_connect="
        + quote_plus(f"DRIVER={{ODBC Driver 18 for SQL Server}};SERVER=db;UID=sa;PWD={EMBEDDED}"),
    ],
    ids=["query-password", "odbc-connect-pwd"],
)
def test_check_refuses_a_password_in_the_url_query(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data(source_url=url, history_url="sqlite:///h.db", outbox=tmp_path / "o")
    path = write_config(tmp_path / "c.yaml", data)
    code = main(["check", "--config", str(path)])
    captured = capsys.readouterr()
    assert EMBEDDED not in captured.out + captured.err
    assert code == 2 and "password" in captured.err
