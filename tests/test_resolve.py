"""A person resolves ambiguous letters: `letters --status ambiguous`, `mark-sent`, `resend`.

The ambiguous letters are made the way they happen in production: the SMTP server takes the
message data and drops the connection before its final reply (scripted server of
test_smtp_faults).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cobranca import cli
from cobranca.config import Config
from cobranca.history import HistoryStore, LetterEventRecord, LetterRecord
from cobranca.models import LetterStatus
from conftest import AS_OF
from test_smtp_faults import (
    DEMO_LETTERS,
    DROP,
    FaultyServer,
    fault_config,
    faulty_server,  # noqa: F401  (the fixture)
    letters,
    message_id,
    run,
)


@pytest.fixture
def ambiguous(
    demo_sqlite: str,
    faulty_server: FaultyServer,  # noqa: F811
    tmp_path: Path,
) -> tuple[Config, list[LetterRecord]]:
    """A run whose first two letters went out with no final reply: two ambiguous letters."""
    faulty_server.handler.script["DATA"] = [DROP, DROP]
    config = fault_config(tmp_path, demo_sqlite, faulty_server)
    result = run(config).results[0]
    assert result.ambiguous == 2 and result.sent == DEMO_LETTERS - 2
    records = list(letters(config, LetterStatus.AMBIGUOUS).values())
    assert len(records) == 2
    return config, records


def _cli(config: Config, *argv: str) -> int:
    return cli.main([*argv, "--config", str(config.path)])


def _record(config: Config, letter_id: int) -> tuple[LetterRecord, list[LetterEventRecord]]:
    history = HistoryStore(config.history.engine_url())
    try:
        record = history.letter(letter_id)
        assert record is not None
        return record, history.events(letter_id)
    finally:
        history.close()


def test_letters_lists_the_ambiguous_ones(
    ambiguous: tuple[Config, list[LetterRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, records = ambiguous
    assert _cli(config, "letters", "--status", "ambiguous") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 letter(s) ambiguous"
    listed = out[:-1]
    assert len(listed) == 2
    for line, record in zip(listed, records, strict=True):
        fields = line.split()
        assert fields[0] == str(record.id)
        assert AS_OF.isoformat() in fields and "ambiguous" in fields
        assert record.message_id in line
        assert "connection lost after the message data was sent" in line
    layout = records[0].layout
    assert _cli(config, "letters", "--status", "ambiguous", "--layout", layout) == 0
    assert capsys.readouterr().out.splitlines() == out
    assert _cli(config, "letters", "--status", "ambiguous", "--layout", "other") == 0
    assert capsys.readouterr().out.splitlines() == ["0 letter(s) ambiguous"]


def test_mark_sent_records_who_decided_and_sends_nothing(
    ambiguous: tuple[Config, list[LetterRecord]],
    faulty_server: FaultyServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, (letter, other) = ambiguous
    copies = len(faulty_server.handler.copies)
    code = _cli(config, "mark-sent", str(letter.id), "--operator", "ana", "--note",
                "cliente confirmou")  # fmt: skip
    assert code == 0
    assert f"letter {letter.id} recorded as sent by ana" in capsys.readouterr().out
    record, history = _record(config, letter.id)
    assert record.status == "sent"
    assert record.message_id == letter.message_id
    assert "ana" in record.reason and "cliente confirmou" in record.reason
    last = history[-1]
    assert (last.status, last.actor) == ("sent", "ana")
    assert "cliente confirmou" in last.reason
    assert [e.status for e in history] == ["planned", "sending", "ambiguous", "sent"]
    assert len(faulty_server.handler.copies) == copies  # nothing went to the server
    assert _record(config, other.id)[0].status == "ambiguous"  # the other one is untouched

    # Resolved once: a second decision on it is refused.
    assert _cli(config, "resend", str(letter.id), "--operator", "ana") == 2
    assert "is sent" in capsys.readouterr().err
    assert len(faulty_server.handler.copies) == copies


def test_mark_sent_letter_has_a_sent_at(
    ambiguous: tuple[Config, list[LetterRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, (letter, _) = ambiguous
    assert _cli(config, "mark-sent", str(letter.id), "--operator", "ana") == 0
    record, _ = _record(config, letter.id)
    assert record.status == "sent"
    assert record.sent_at is not None


def test_resend_sends_it_again_with_the_same_message_id(
    ambiguous: tuple[Config, list[LetterRecord]],
    faulty_server: FaultyServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, (_, letter) = ambiguous
    handler = faulty_server.handler
    assert handler.copy_ids()[letter.message_id] == 1  # the ambiguous copy
    accepted = len(handler.received)

    assert _cli(config, "resend", str(letter.id), "--operator", "ana") == 0
    assert f"letter {letter.id} sent again" in capsys.readouterr().out
    assert len(handler.received) == accepted + 1
    mail = handler.received[-1]
    assert message_id(mail.message) == letter.message_id
    assert mail.rcpt_tos == letter.recipients.split(", ")
    assert handler.copy_ids()[letter.message_id] == 2
    record, history = _record(config, letter.id)
    assert record.status == "sent" and record.sent_at is not None
    assert record.message_id == letter.message_id
    assert record.server_reply.startswith("250")
    statuses = [e.status for e in history]
    assert statuses == ["planned", "sending", "ambiguous", "planned", "sending", "sent"]
    assert history[3].actor == "ana" and "resend by ana" in history[3].reason

    # Not ambiguous any more: a second resend is refused and sends nothing.
    assert _cli(config, "resend", str(letter.id), "--operator", "ana") == 2
    err = capsys.readouterr().err
    assert f"letter {letter.id} is sent" in err and "can be resent" in err
    assert len(handler.received) == accepted + 1


def test_resend_that_is_dropped_again_stays_ambiguous_and_exits_1(
    ambiguous: tuple[Config, list[LetterRecord]],
    faulty_server: FaultyServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, (letter, _) = ambiguous
    faulty_server.handler.script["DATA"] = [DROP]
    assert _cli(config, "resend", str(letter.id), "--operator", "ana") == 1
    err = capsys.readouterr().err
    assert f"letter {letter.id} not sent" in err
    assert "connection lost after the message data was sent" in err
    record, _ = _record(config, letter.id)
    assert record.status == "ambiguous"
    assert faulty_server.handler.copy_ids()[letter.message_id] == 2


def test_resend_or_mark_sent_of_a_letter_that_is_not_ambiguous_exits_2(
    ambiguous: tuple[Config, list[LetterRecord]],
    faulty_server: FaultyServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = ambiguous
    sent = next(iter(letters(config, LetterStatus.SENT).values()))
    copies = len(faulty_server.handler.copies)
    for command in ("resend", "mark-sent"):
        assert _cli(config, command, str(sent.id), "--operator", "ana") == 2
        err = capsys.readouterr().err
        assert f"letter {sent.id} is sent; only ambiguous" in err
    record, history = _record(config, sent.id)
    assert record.status == "sent" and record.reason == sent.reason
    assert [e.status for e in history] == ["planned", "sending", "sent"]
    assert len(faulty_server.handler.copies) == copies


def test_unknown_letter_exits_2(
    ambiguous: tuple[Config, list[LetterRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = ambiguous
    for command in ("resend", "mark-sent"):
        assert _cli(config, command, "999999", "--operator", "ana") == 2
        assert "letter 999999 does not exist" in capsys.readouterr().err
    assert _cli(config, "letters", "--status", "lost") == 2
    assert "unknown status 'lost'" in capsys.readouterr().err


def test_refusal_is_not_called_a_configuration_error(
    ambiguous: tuple[Config, list[LetterRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = ambiguous
    sent = next(iter(letters(config, LetterStatus.SENT).values()))
    assert _cli(config, "resend", str(sent.id), "--operator", "ana") == 2
    assert "configuration error" not in capsys.readouterr().err


def test_resend_with_the_server_down_fails_temporarily_and_exits_1(
    ambiguous: tuple[Config, list[LetterRecord]],
    faulty_server: FaultyServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, (letter, _) = ambiguous
    faulty_server.stop()
    assert _cli(config, "resend", str(letter.id), "--operator", "ana") == 1
    err = capsys.readouterr().err
    assert f"letter {letter.id} not sent: SMTP unreachable after 3 tries" in err
    record, history = _record(config, letter.id)
    assert record.status == "failed_temporary"
    assert [e.status for e in history][3:] == ["planned", "sending", "failed_temporary"]
