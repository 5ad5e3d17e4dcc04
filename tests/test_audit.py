"""`cobranca audit verify` passes on an untouched history and names what a direct SQL change did."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import create_engine, event, text

from cobranca import audit
from cobranca import history as history_module
from cobranca.audit import verify
from cobranca.cli import main
from cobranca.config import load_config
from cobranca.demo import write_demo_database
from cobranca.history import HistoryStore
from cobranca.runner import run_layouts
from conftest import AS_OF, config_data, write_config


def _history(tmp_path: Path, source: str, history_url: str) -> str:
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=source, history_url=history_url, outbox=tmp_path / "outbox"),
    )
    assert run_layouts(load_config(path), as_of=AS_OF).ok
    return history_url


def _verify(url: str) -> Any:
    history = HistoryStore(url)
    try:
        return verify(history)
    finally:
        history.close()


def _sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()


TAMPERING = [
    ("UPDATE cobranca_letters SET recipients = 'x@evil.example' WHERE id = 2",
     "letter 2 was changed outside cobranca: recipients"),
    ("UPDATE cobranca_letters SET status = 'failed_permanent' WHERE id = 3",
     "letter 3 was changed outside cobranca: status"),
    ("UPDATE cobranca_letter_titles SET balance = '1.00' WHERE letter_id = 4",
     "letter 4 was changed outside cobranca: titles"),
    ("UPDATE cobranca_events SET reason = 'nothing to see' WHERE seq = 5",
     "event 5 (letter"),
    ("DELETE FROM cobranca_events WHERE seq = 7", "events 7..7 are missing (deleted)"),
    ("DELETE FROM cobranca_events WHERE seq = (SELECT max(seq) FROM cobranca_events)",
     "are missing (deleted)"),
    ("INSERT INTO cobranca_events (seq, kind, letter_id, at, status, reason, actor, payload,"
     " prev_hash, hash) SELECT max(seq) + 1, 'letter', 1, max(at), 'sent', '', 'me', '{}',"
     " 'x', 'y' FROM cobranca_events", "were added outside cobranca"),
    # SQLite enforces no foreign key unless asked: a letter row can go, its events stay.
    ("DELETE FROM cobranca_letters WHERE id = 6", "letter 6 was deleted (its events remain)"),
    ("INSERT INTO cobranca_letters (run_id, layout, as_of, customer_code, customer_store,"
     " customer_name, recipients, subject, message_id, titles_digest, transport, status, reason,"
     " needs_print, operator, rule, templates_digest, raw_message, server_reply, total, attempts,"
     " holder, created_at, updated_at) SELECT run_id, layout, as_of, 'ZZZZZZ', customer_store,"
     " customer_name, recipients, subject, 'x', titles_digest, transport, status, reason,"
     " needs_print, operator, rule, templates_digest, raw_message, server_reply, total, attempts,"
     " holder, created_at, updated_at FROM cobranca_letters WHERE id = 1",
     "has no event: it was inserted outside cobranca"),
]  # fmt: skip


@pytest.mark.parametrize(("statement", "named"), TAMPERING)
def test_verify_names_direct_changes_on_sqlite(
    demo_sqlite: str, tmp_path: Path, statement: str, named: str
) -> None:
    url = _history(tmp_path, demo_sqlite, f"sqlite:///{tmp_path / 'h.db'}")
    clean = _verify(url)
    assert clean.ok and clean.events > clean.letters > 0, clean.problems
    _sql(url, statement)
    result = _verify(url)
    assert not result.ok
    assert any(named in problem for problem in result.problems), result.problems


def test_verify_reads_letters_in_chunks_and_checks_every_one(
    demo_sqlite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters are compared a chunk at a time (memory stays one chunk's): every letter is
    counted, and a change in the last chunk, or a deletion in the first, is still found."""
    url = _history(tmp_path, demo_sqlite, f"sqlite:///{tmp_path / 'h.db'}")
    whole = _verify(url)
    monkeypatch.setattr(audit, "VERIFY_CHUNK", 3)
    chunked = _verify(url)
    assert chunked.ok and chunked.letters == whole.letters > 3 * 2
    _sql(url, f"UPDATE cobranca_letters SET subject = 'outro' WHERE id = {whole.letters}")
    _sql(url, "DELETE FROM cobranca_letters WHERE id = 2")
    assert _verify(url).problems == (
        f"letter {whole.letters} was changed outside cobranca: subject",
        "letter 2 was deleted (its events remain)",
    )


@pytest.mark.postgres
@pytest.mark.parametrize(("statement", "named"), TAMPERING[:5])
def test_verify_names_direct_changes_on_postgresql(
    demo_sqlite: str, tmp_path: Path, postgres_url: Any, statement: str, named: str
) -> None:
    url = _history(tmp_path, demo_sqlite, postgres_url())
    assert _verify(url).ok
    _sql(url, statement)
    result = _verify(url)
    assert any(named in problem for problem in result.problems), result.problems


def test_audit_command_exit_codes(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _history(tmp_path, demo_sqlite, f"sqlite:///{tmp_path / 'h.db'}")
    config = str(tmp_path / "c.yaml")
    assert main(["audit", "verify", "--config", config]) == 0
    assert "audit OK" in capsys.readouterr().out
    assert main(["audit", "head", "--config", config]) == 0
    head = capsys.readouterr().out
    _sql(url, "UPDATE cobranca_letters SET subject = 'outro' WHERE id = 1")
    assert main(["audit", "verify", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED: letter 1 was changed outside cobranca: subject" in out
    assert head.split()[-1] in out  # the head itself is unchanged: the row was edited around it


OLD_DAY = AS_OF - timedelta(days=6 * 365)  # past the retention period


def _old_and_new_letters(
    demo_sqlite: str, tmp_path: Path, customers: int = 20
) -> tuple[Path, str, list[Any]]:
    """A history with a run six years ago and one today: its config, URL and the old letters."""
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    outbox=tmp_path / "outbox"),
    )  # fmt: skip
    config = load_config(path)
    old_source = f"sqlite:///{tmp_path / 'old-erp.db'}"
    write_demo_database(old_source, customers=customers, seed=3, as_of=OLD_DAY)
    old_path = write_config(
        tmp_path / "old.yaml",
        config_data(source_url=old_source, history_url=config.history.url,
                    outbox=tmp_path / "outbox"),
    )  # fmt: skip
    with time_machine.travel(datetime(OLD_DAY.year, OLD_DAY.month, OLD_DAY.day, 12, tzinfo=UTC)):
        assert run_layouts(load_config(old_path), as_of=OLD_DAY).ok
    assert run_layouts(config, as_of=AS_OF).ok
    history = HistoryStore(config.history.url)
    old_letters = [r for r in history.letters() if r.as_of == OLD_DAY]
    history.close()
    return path, config.history.url, old_letters


def test_purge_keeps_the_chain_verifiable_and_tampering_still_shows(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, url, old_letters = _old_and_new_letters(demo_sqlite, tmp_path)
    before = _verify(url)
    assert before.ok and old_letters
    assert main(["purge", "--yes", "--operator", "dpo", "--config", str(path)]) == 0
    assert f"{len(old_letters)} letters" in capsys.readouterr().out
    after = _verify(url)
    history = HistoryStore(url)
    remaining = history.letters()
    history.close()
    assert after.ok, after.problems
    assert all(r.as_of == AS_OF for r in remaining) and remaining
    assert after.events < before.events
    # Tampering after the purge is still found, and so is a moved checkpoint.
    _sql(url, "UPDATE cobranca_chain_checkpoint SET seq = seq + 1")
    assert any("checkpoint" in p for p in _verify(url).problems)


def test_purge_names_its_letters_in_chunks_within_the_databases_limit(
    demo_sqlite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Databases cap the values one statement binds (PostgreSQL 65,535; SQLite 32,766, or 999
    before 3.32): a month of letters at company scale is more, and one `IN (...)` of every
    letter purged failed. Here SQLite's cap is lowered below the old letters' number."""
    _, url, old_letters = _old_and_new_letters(demo_sqlite, tmp_path, customers=80)
    cap = 12  # bound values a statement may take here; an event row takes ten
    assert len(old_letters) > cap
    monkeypatch.setattr(history_module, "PURGE_CHUNK", 4)
    history = HistoryStore(url)

    def capped(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, cap)

    event.listen(history.engine, "connect", capped)
    history.engine.dispose()  # new connections, capped
    try:
        counts = history.purge(datetime.combine(OLD_DAY, time(), UTC) + timedelta(days=1), "dpo")
    finally:
        history.close()
    assert counts["letters"] == len(old_letters)
    after = _verify(url)
    assert after.ok, after.problems
