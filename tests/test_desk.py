"""The finance desk: `preview` and `send` go through the daemon's own plan, render and delivery."""

from __future__ import annotations

import argparse
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from cobranca.cli import build_parser, main
from cobranca.config import load_config
from cobranca.history import HistoryStore
from cobranca.runner import run_layouts
from cobranca.send import send_command
from conftest import AS_OF, LAYOUTS, SmtpServer, config_data, write_config


@pytest.fixture
def desk(demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    smtp=smtp_server, layouts=LAYOUTS[1:]),
    )  # fmt: skip


def cli(*argv: str) -> int:
    return main([*argv, "--log-level", "WARNING"])


def customer_with_letter(path: Path) -> Any:
    """A customer the layout selects today, with a usable e-mail (from a dry run)."""
    report = run_layouts(load_config(path), as_of=AS_OF, dry_run=True)
    assert report.results[0].would_send > 0
    from cobranca.source import ProtheusSource

    config = load_config(path)
    source = ProtheusSource(config.source)
    try:
        for group in source.customers_titles(config.layout("primeiro-aviso").selection, AS_OF):
            if "@" in group.customer.raw_emails and ";" not in group.customer.raw_emails:
                return group
    finally:
        source.close()
    raise AssertionError("no customer with one e-mail")


def test_preview_text_html_eml_show_the_letter_and_send_nothing(
    desk: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    group = customer_with_letter(desk)
    who = group.customer.key
    args = ("preview", "primeiro-aviso", "--customer", who, "--config", str(desk),
            "--as-of", AS_OF.isoformat())  # fmt: skip
    assert cli(*args) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"To: {group.customer.raw_emails.strip().lower()}\nSubject: ")
    assert group.titles[0].number in text
    assert cli(*args, "--format", "html") == 0
    html = capsys.readouterr().out
    assert html.lstrip().lower().startswith("<!doctype html") and group.titles[0].number in html
    assert cli(*args, "--format", "eml", "--open") == 0
    eml = Path(capsys.readouterr().out.strip())
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None
    assert smtp_server.received == []
    history = HistoryStore(load_config(desk).history.engine_url())
    assert history.letters() == []
    history.close()


def test_preview_of_a_customer_the_layout_does_not_select_exits_2(
    desk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("preview", "primeiro-aviso", "--customer", "999999", "--config", str(desk)) == 2
    assert "has no open título that layout primeiro-aviso selects" in capsys.readouterr().err


def _send_args(path: Path, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["send", "primeiro-aviso", "--config", str(path), *extra])


def test_send_asks_and_respects_the_answer(
    desk: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    who = customer_with_letter(desk).customer.key
    config = load_config(desk)
    args = _send_args(desk, "--customer", who, "--operator", "ana")
    assert send_command(config, args, AS_OF, ask=lambda prompt: "n") == 1
    assert smtp_server.received == []
    assert send_command(config, args, AS_OF, ask=lambda prompt: "s") == 0
    assert len(smtp_server.received) == 1
    history = HistoryStore(config.history.engine_url())
    (letter,) = history.letters()
    events = history.events(letter.id)
    history.close()
    assert letter.status == "sent" and letter.operator == "ana"
    assert events[0].actor == "ana" and "by hand (ana)" in events[0].reason
    # The same letter again the same day: refused, even with --force, and nothing sent.
    again = _send_args(desk, "--customer", who, "--force", "--yes")
    assert send_command(config, again, AS_OF) == 2
    assert "already has this layout's letter for the day" in capsys.readouterr().out
    assert len(smtp_server.received) == 1


def test_send_without_yes_off_a_terminal_refuses(
    desk: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    who = customer_with_letter(desk).customer.key
    assert cli("send", "primeiro-aviso", "--customer", who, "--config", str(desk)) == 2
    assert "confirm with --yes" in capsys.readouterr().err
    assert smtp_server.received == []


def test_force_overrides_the_cadence_and_is_recorded(
    desk: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(desk)
    assert run_layouts(config, as_of=AS_OF).ok  # the daemon's letters of the day
    sent = len(smtp_server.received)
    who = customer_with_letter(desk).customer.key
    tomorrow = (AS_OF + timedelta(days=1)).isoformat()
    plain = _send_args(desk, "--customer", who, "--yes", "--as-of", tomorrow)
    assert send_command(config, plain, AS_OF) == 2
    assert "got this layout within its cadence" in capsys.readouterr().out
    assert len(smtp_server.received) == sent
    forced = _send_args(desk, "--customer", who, "--yes", "--force", "--as-of", tomorrow,
                        "--operator", "bruno")  # fmt: skip
    assert send_command(config, forced, AS_OF) == 0
    assert len(smtp_server.received) == sent + 1
    history = HistoryStore(config.history.engine_url())
    manual = [r for r in history.letters() if r.operator]
    planned_event = history.events(manual[0].id)[0]
    history.close()
    assert len(manual) == 1 and manual[0].operator == "bruno" and manual[0].status == "sent"
    assert planned_event.actor == "bruno"
    assert "cadence overridden by hand" in planned_event.reason


def test_send_one_titulo_lists_only_that_titulo(
    desk: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    group = next(
        g for g in _groups(desk) if len(g.titles) >= 2 and g.customer.raw_emails.count("@") == 1
    )
    chosen, other = group.titles[0], group.titles[1]
    args = ("send", "primeiro-aviso", "--title", chosen.key, "--yes", "--config", str(desk),
            "--as-of", AS_OF.isoformat())  # fmt: skip
    assert cli(*args) == 0
    # A race with the day's run is "already recorded", whatever that letter's state.
    out = capsys.readouterr().out
    assert "sent 1, to print 0, failed 0, ambiguous 0, already recorded today 0" in out
    (mail,) = smtp_server.received
    html = mail.message.get_body(("html",)).get_content()
    assert chosen.number in html and other.number not in html


def test_unknown_titulo_key_is_refused(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("send", "primeiro-aviso", "--title", "01|NF|999||NF|000002|01", "--yes",
            "--config", str(desk))  # fmt: skip
    assert cli(*args) == 2
    assert "not open títulos selected by layout primeiro-aviso" in capsys.readouterr().err


def _groups(path: Path) -> list[Any]:
    from cobranca.source import ProtheusSource

    config = load_config(path)
    source = ProtheusSource(config.source)
    try:
        return list(source.customers_titles(config.layout("primeiro-aviso").selection, AS_OF))
    finally:
        source.close()


def test_attach_pdf_adds_the_printed_letter_to_the_email(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    from io import BytesIO

    from pypdf import PdfReader

    layouts = [{**LAYOUTS[1], "attach_pdf": True}]
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    smtp=smtp_server, layouts=layouts),
    )  # fmt: skip
    config = load_config(path)
    assert run_layouts(config, as_of=AS_OF).ok
    assert smtp_server.received
    history = HistoryStore(config.history.engine_url())
    by_id = {r.message_id: r for r in history.letters()}
    history.close()
    for mail in smtp_server.received:
        record = by_id[str(mail.message["Message-ID"]).strip()]
        (attachment,) = list(mail.message.iter_attachments())
        assert attachment.get_content_type() == "application/pdf"
        assert attachment.get_filename().startswith("carta-primeiro-aviso-")
        text = "".join(p.extract_text() for p in PdfReader(BytesIO(attachment.get_content())).pages)
        html = mail.message.get_body(("html",)).get_content()
        assert "TÍTULOS VENCIDOS" in text.upper()
        assert record.customer_name.split()[0] in text
        assert all(t.title_key.split("|")[2] in text for t in record.titles)
        assert mail.message.get_body(("plain",)) is not None and html


def test_send_with_the_filters_of_titles(
    desk: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = [g for g in _groups(desk) if g.customer.raw_emails.count("@") == 1]
    target = groups[0]
    fragment = (
        target.customer.name.split()[-2]
        if len(target.customer.name.split()) > 1
        else (target.customer.name)
    )
    matching = [g for g in groups if fragment.lower() in g.customer.name.lower()]
    assert cli("send", "primeiro-aviso", "--name", fragment, "--days-late-min", "1", "--yes",
               "--config", str(desk), "--as-of", AS_OF.isoformat()) == 0  # fmt: skip
    received = {str(m.message["To"]) for m in smtp_server.received}
    assert received == {g.customer.raw_emails.strip().lower() for g in matching}


def test_preview_pdf_writes_a_pdf(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pypdf import PdfReader

    group = customer_with_letter(desk)
    assert cli("preview", "primeiro-aviso", "--customer", group.customer.key, "--format", "pdf",
               "--config", str(desk), "--as-of", AS_OF.isoformat()) == 0  # fmt: skip
    pdf = Path(capsys.readouterr().out.strip())
    text = "".join(page.extract_text() for page in PdfReader(str(pdf)).pages)
    assert group.titles[0].number in text
