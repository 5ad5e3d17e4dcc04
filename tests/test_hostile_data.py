"""ERP text with HTML and CR/LF must neither break a letter nor add a header or recipient."""

from __future__ import annotations

from pathlib import Path

from cobranca.config import load_config
from cobranca.demo import HOSTILE_CODE, HOSTILE_NAME
from cobranca.runner import run_layouts
from conftest import AS_OF, SmtpServer, config_data, write_config

EVERY_OVERDUE = [
    {
        "name": "todos-vencidos",
        "schedule": "0 9 * * mon-fri",
        "template": "primeiro-aviso",
        "subject": "Aviso – {{ customer.name }}",
        "selection": {"days": {"min": 1}},
    }
]


def test_hostile_customer_name_is_escaped_and_injects_nothing(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        config_data(
            source_url=demo_sqlite,
            history_url=f"sqlite:///{tmp_path / 'h.db'}",
            smtp=smtp_server,
            layouts=EVERY_OVERDUE,
        ),
    )
    report = run_layouts(load_config(path), as_of=AS_OF)
    assert report.ok, report.as_dict()
    hostile = [m for m in smtp_server.received if "bar-do-ze" in str(m.message["To"])]
    assert len(hostile) == 1, f"customer {HOSTILE_CODE} must get exactly one letter"
    mail = hostile[0]
    message = mail.message
    assert all("evil" not in rcpt for rcpt in mail.rcpt_tos)
    assert message["Bcc"] is None and message["Cc"] is None
    subject = str(message["Subject"])
    assert "\r" not in subject and "\n" not in subject
    assert subject == "Aviso – " + " ".join(HOSTILE_NAME.split())
    html = message.get_body(("html",)).get_content()
    assert "<b>Bar" not in html
    assert "&lt;b&gt;Bar &amp; &#34;Zé&#34;&lt;/b&gt;" in html
    plain = message.get_body(("plain",)).get_content()
    assert '<b>Bar & "Zé"</b>' in plain
    # Every other header came from us, not from the customer's name.
    names = {name.lower() for name in message}
    assert names <= {
        "from", "to", "reply-to", "subject", "date", "message-id", "auto-submitted",
        "x-cobranca-layout", "mime-version", "content-type", "x-peer", "x-mailfrom",
        "x-rcptto",
    }  # fmt: skip
