"""SMTP delivery against a real aiosmtpd server: STARTTLS and implicit TLS verified, login with a
password that never leaves the environment variable it came from."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import create_engine, text

from cobranca.config import load_config
from cobranca.history import HistoryStore
from cobranca.runner import run_layouts
from cobranca.summary import format_json, format_text
from conftest import AS_OF, LAYOUTS, RecordingHandler, config_data, free_port, write_config

PASSWORD = "s3cret-Pw!9"
USER = "cobranca-user"


@dataclass
class TlsHandler(RecordingHandler):
    sessions: list[tuple[bool, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.sessions.append((tls, bool(session.authenticated)))
        return await super().handle_DATA(server, session, envelope)


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USER.encode()
        and (data.password == PASSWORD.encode())
    )
    # handled=False on failure, or the client waits for its timeout (shared/libraries.md).
    return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)


@dataclass
class TlsServer:
    port: int
    handler: TlsHandler
    ca_file: Path


@pytest.fixture
def certificate_authority(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def _serve(ca: trustme.CA, ca_file: Path, **server_options: Any) -> Iterator[TlsServer]:
    handler = TlsHandler()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, auth_required=True,
        authenticator=authenticator, **server_options,
    )  # fmt: skip
    controller.start()
    try:
        yield TlsServer(port, handler, ca_file)
    finally:
        controller.stop()


@pytest.fixture
def starttls_server(certificate_authority: tuple[trustme.CA, Path]) -> Iterator[TlsServer]:
    ca, ca_file = certificate_authority
    yield from _serve(ca, ca_file, tls_context=_server_context(ca), require_starttls=True)


@pytest.fixture
def implicit_tls_server(certificate_authority: tuple[trustme.CA, Path]) -> Iterator[TlsServer]:
    ca, ca_file = certificate_authority
    # aiosmtpd only knows about STARTTLS; this socket is TLS from the first byte.
    yield from _serve(ca, ca_file, ssl_context=_server_context(ca), auth_require_tls=False)


def _config(tmp_path: Path, source: str, server: TlsServer, *, security: str, trust: bool) -> Path:
    data = config_data(
        source_url=source, history_url=f"sqlite:///{tmp_path / 'h.db'}", layouts=LAYOUTS[1:]
    )
    data["delivery"]["transport"] = "smtp"
    data["delivery"]["smtp"] = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": security,
        "username": USER,
        "password_env": "COBRANCA_TEST_SMTP_PASSWORD",
        "timeout_seconds": 10,
        **({"ca_file": str(server.ca_file)} if trust else {}),
    }
    return write_config(tmp_path / "c.yaml", data)


def _history_text(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = []
        for table in ("cobranca_runs", "cobranca_letters", "cobranca_letter_titles"):
            rows += [repr(tuple(r)) for r in connection.execute(text(f"SELECT * FROM {table}"))]
    engine.dispose()
    return "\n".join(rows)


def test_starttls_login_delivers_over_verified_tls(
    demo_sqlite: str,
    starttls_server: TlsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("COBRANCA_TEST_SMTP_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    config = load_config(_config(tmp_path, demo_sqlite, starttls_server, security="starttls",
                                 trust=True))  # fmt: skip
    report = run_layouts(config, as_of=AS_OF)
    assert report.ok, report.as_dict()
    sent = report.results[0].sent
    assert sent > 0 and len(starttls_server.handler.received) == sent
    assert set(starttls_server.handler.sessions) == {(True, True)}  # TLS and logged in
    assert PASSWORD not in caplog.text
    assert PASSWORD not in _history_text(config.history.url)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_login_delivers(
    demo_sqlite: str, implicit_tls_server: TlsServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COBRANCA_TEST_SMTP_PASSWORD", PASSWORD)
    config = load_config(
        _config(tmp_path, demo_sqlite, implicit_tls_server, security="tls", trust=True)
    )
    report = run_layouts(config, as_of=AS_OF)
    assert report.ok, report.as_dict()
    assert len(implicit_tls_server.handler.received) == report.results[0].sent > 0
    assert set(implicit_tls_server.handler.sessions) == {(True, True)}


def test_untrusted_certificate_is_refused_and_letters_wait_for_the_next_run(
    demo_sqlite: str, starttls_server: TlsServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COBRANCA_TEST_SMTP_PASSWORD", PASSWORD)
    config = load_config(
        _config(tmp_path, demo_sqlite, starttls_server, security="starttls", trust=False)
    )
    report = run_layouts(config, as_of=AS_OF)
    result = report.results[0]
    assert not report.ok and result.sent == 0 and result.failed == 1
    assert starttls_server.handler.received == []
    assert "CERTIFICATE_VERIFY_FAILED" in result.failures.entries[0][1]
    assert "CERTIFICATE_VERIFY_FAILED" in result.error  # the layout stopped, saying why
    history = HistoryStore(config.history.engine_url())
    letters = [r for r in history.letters() if r.transport == "smtp"]
    history.close()
    assert [r.status for r in letters].count("failed_temporary") == 1
    waiting = [r for r in letters if r.status == "planned"]
    assert len(waiting) == len(letters) - 1 == result.left_planned
    assert all("CERTIFICATE_VERIFY_FAILED" in r.reason for r in waiting)


def test_wrong_password_fails_letters_and_never_shows_the_password(
    demo_sqlite: str,
    starttls_server: TlsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "wr0ng-Secret-value"
    monkeypatch.setenv("COBRANCA_TEST_SMTP_PASSWORD", wrong)
    caplog.set_level(logging.DEBUG)
    config = load_config(_config(tmp_path, demo_sqlite, starttls_server, security="starttls",
                                 trust=True))  # fmt: skip
    report = run_layouts(config, as_of=AS_OF)
    result = report.results[0]
    assert result.sent == 0 and result.failed > 0
    assert "535" in result.failures.entries[0][1]
    assert starttls_server.handler.received == []
    for text_out in (caplog.text, format_text(report), format_json(report),
                     _history_text(config.history.url)):  # fmt: skip
        assert wrong not in text_out


def test_missing_password_variable_is_named(
    demo_sqlite: str, starttls_server: TlsServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("COBRANCA_TEST_SMTP_PASSWORD", raising=False)
    config = load_config(
        _config(tmp_path, demo_sqlite, starttls_server, security="starttls", trust=True)
    )
    report = run_layouts(config, as_of=AS_OF)
    assert not report.ok
    assert "COBRANCA_TEST_SMTP_PASSWORD" in report.results[0].error
    assert starttls_server.handler.received == []
