"""Hostile and broken ERP rows: reported, never sent, never injected, never stopping the others.

Rows are added to the demo SE1/SA1 with SQLAlchemy Core, space-padded to each column's width as
DBAccess stores them: títulos with a negative E1_SALDO, a blank E1_VENCREA, an E1_EMISSAO of
'20251340' and an unknown type; customers whose A1_EMAIL is a mess or carries CR/LF and "Bcc:",
whose A1_NOME has control characters or latin-1 mojibake.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cobranca import runner, summary
from cobranca.cli import main
from cobranca.config import Config, load_config
from cobranca.demo import write_demo_database
from cobranca.history import HistoryStore
from cobranca.models import Disposition
from cobranca.plan import plan_letter
from cobranca.runner import run_layouts
from cobranca.source import ProtheusSource
from conftest import AS_OF, ErpWriter, SmtpServer, config_data, write_config

WIDE_LAYOUT = [
    {
        "name": "todos-vencidos",
        "schedule": "0 9 * * mon-fri",
        "template": "primeiro-aviso",
        "subject": "Aviso – {{ customer.name }}",
        "selection": {"days": {"min": 1}},
    }
]
CONTROL_NAME = "Ana\x00\x01\x07\x08 Tecidos\x1b[31m\x7f Ltda"
MOJIBAKE_NAME = "JoÃ£o da ConceiÃ§Ã£o Ltda"
CRLF_NAME = "Fulano\r\nBcc: spy@evil.example"
# Headers a letter may have (the last three are added by aiosmtpd on receipt).
OUR_HEADERS = {
    "from", "to", "reply-to", "subject", "date", "message-id", "auto-submitted",
    "x-cobranca-layout", "mime-version", "content-type", "x-peer", "x-mailfrom", "x-rcptto",
}  # fmt: skip
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
GOOD: dict[str, Any] = {}  # no override: an open título 10 days overdue, R$ 150,00


def _config(
    tmp_path: Path, source: str, smtp: SmtpServer | None = None, history_url: str | None = None
) -> Path:
    data = config_data(
        source_url=source,
        history_url=history_url or f"sqlite:///{tmp_path / 'h.db'}",
        smtp=smtp,
        outbox=tmp_path / "outbox",
        layouts=WIDE_LAYOUT,
    )
    return write_config(tmp_path / "c.yaml", data)


def _owed(config: Config) -> dict[str, Disposition]:
    layout = config.layouts[0]
    source = ProtheusSource(config.source)
    try:
        return {
            group.customer.key: plan_letter(group, layout, AS_OF, None).disposition
            for group in source.customers_titles(layout.selection, AS_OF)
        }
    finally:
        source.close()


def test_bad_rows_are_reported_and_every_other_letter_goes_out_clean(
    demo_sqlite: str,
    smtp_server: SmtpServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _config(tmp_path, demo_sqlite, smtp_server)
    before = _owed(load_config(path))
    demo_letters = {key for key, d in before.items() if d is Disposition.SEND}

    erp = ErpWriter(demo_sqlite)
    _, negative = erp.customer("900001", "Saldo Negativo Ltda", "fin@negativo.com.br",
                               GOOD, {"E1_SALDO": -50.0})  # fmt: skip
    _, blank_due = erp.customer("900002", "Vencimento Branco Ltda", "fin@branco.com.br",
                                GOOD, {"E1_VENCREA": ""})  # fmt: skip
    _, bad_issue = erp.customer("900003", "Emissao Invalida Ltda", "fin@emissao.com.br",
                                GOOD, {"E1_EMISSAO": "20251340"})  # fmt: skip
    _, unknown_type = erp.customer("900004", "Tipo Estranho Ltda", "fin@tipo.com.br",
                                   GOOD, {"E1_TIPO": "ZZZ"})  # fmt: skip
    only_bad = erp.customer("900005", "So Titulos Ruins Ltda", "fin@ruins.com.br",
                            {"E1_SALDO": -1.0}, {"E1_VENCREA": ""})  # fmt: skip
    erp.customer("900006", "Enderecos Baguncados Ltda",
                 "a@x.com.br;;  ; b@@x ,c@x.com.br", GOOD)  # fmt: skip
    erp.customer("900007", CRLF_NAME,
                 "fulano@cliente7.com.br,\r\nBcc: spy@evil.example\r\nCc: spy2@evil.example",
                 GOOD)  # fmt: skip
    erp.customer("900008", "Beltrano\r\nTo: spy@evil.example",
                 "beltrano@cliente8.com.br\r\nBcc: spy@evil.example", GOOD)  # fmt: skip
    erp.customer("900009", CONTROL_NAME, "ana@cliente9.com.br", GOOD)
    erp.customer("900010", MOJIBAKE_NAME, "joao@cliente10.com.br", GOOD)

    code = main(["run", "--config", str(path), "--as-of", AS_OF.isoformat(), "--format", "json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    (layout,) = summary["layouts"]
    assert layout["error"] == "" and layout["failed"] == 0 and layout["ambiguous"] == 0

    # Each bad título is reported once, its reason naming the field; none is in a letter.
    rejected = {r["title"]: r["reason"] for r in layout["rejected_titles"]}
    assert len(rejected) == len(layout["rejected_titles"])
    assert "E1_SALDO" in rejected[negative] and "negative" in rejected[negative]
    assert "E1_VENCREA" in rejected[blank_due] and "blank" in rejected[blank_due]
    assert "E1_EMISSAO" in rejected[bad_issue] and "20251340" in rejected[bad_issue]
    assert "'ZZZ'" in rejected[unknown_type] and "collectible_types" in rejected[unknown_type]
    assert "E1_SALDO" in rejected[only_bad[0]] and "E1_VENCREA" in rejected[only_bad[1]]
    assert layout["skipped"] == {"no_valid_titles": 1}  # 900005: nothing left to collect
    invalid = {e["customer"]: e["entries"] for e in layout["invalid_emails"]}
    assert invalid["900006/01"] == "b@@x"
    assert "Bcc: spy@evil.example" in invalid["900007/01"]
    prints = {p["customer"] for p in layout["prints"]}
    assert "900008/01" in prints  # its only address is glued to a header: paper, not e-mail

    history = HistoryStore(load_config(path).history.engine_url())
    try:
        letters = {r.message_id: r for r in history.letters()}
    finally:
        history.close()
    by_customer = {}
    for mail in smtp_server.received:
        letter = letters[str(mail.message["Message-ID"]).strip()]
        by_customer[f"{letter.customer_code}/{letter.customer_store}"] = mail
        for title in letter.titles:
            assert title.title_key not in rejected
    expected = demo_letters | {f"9000{n:02d}/01" for n in (1, 2, 3, 4, 6, 7, 9, 10)}
    assert set(by_customer) == expected
    assert len(smtp_server.received) == len(expected) == layout["sent"]

    assert by_customer["900006/01"].rcpt_tos == ["a@x.com.br", "c@x.com.br"]
    assert by_customer["900007/01"].rcpt_tos == ["fulano@cliente7.com.br"]
    for mail in smtp_server.received:
        message = mail.message
        assert not any("evil" in rcpt for rcpt in mail.rcpt_tos)
        assert {name.lower() for name in message} <= OUR_HEADERS
        assert message["Bcc"] is None and message["Cc"] is None
        assert [str(a.addr_spec) for a in message["To"].addresses] == mail.rcpt_tos
        subject = str(message["Subject"])
        assert not CONTROL.search(subject) and "\r" not in subject and "\n" not in subject
        plain = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "R$" in plain and "R$" in html and "</html>" in html.lower()

    crlf = by_customer["900007/01"].message
    assert str(crlf["Subject"]) == "Aviso – Fulano Bcc: spy@evil.example"  # one line, inert
    mojibake = by_customer["900010/01"].message
    assert str(mojibake["Subject"]) == f"Aviso – {MOJIBAKE_NAME}"
    assert MOJIBAKE_NAME in mojibake.get_body(("plain",)).get_content()
    assert MOJIBAKE_NAME in mojibake.get_body(("html",)).get_content()
    control = by_customer["900009/01"].message
    assert str(control["Subject"]) == "Aviso – Ana Tecidos [31m Ltda"
    for kind in ("plain", "html"):
        body = control.get_body((kind,)).get_content()
        assert "Tecidos" in body and "000000" in body  # the letter and its título are there


def _run_alone(tmp_path: Path, source: str, history_url: str | None = None) -> dict[str, Any]:
    config = load_config(_config(tmp_path, source, history_url=history_url))
    return run_layouts(config, as_of=AS_OF).results[0].as_dict()


def test_garbage_due_date_above_the_window_is_reported(demo_sqlite: str, tmp_path: Path) -> None:
    erp = ErpWriter(demo_sqlite)
    _, sentinel, day_first = erp.customer(
        "900001", "Datas Estranhas Ltda", "fin@datas.com.br",
        GOOD, {"E1_VENCREA": "99999999"}, {"E1_VENCREA": "31122025"},
    )  # fmt: skip
    result = _run_alone(tmp_path, demo_sqlite)
    rejected = {r["title"]: r["reason"] for r in result["rejected_titles"]}
    assert "E1_VENCREA" in rejected.get(sentinel, "")
    assert "E1_VENCREA" in rejected.get(day_first, "")


def test_unknown_type_reason_names_the_field(demo_sqlite: str, tmp_path: Path) -> None:
    (key,) = ErpWriter(demo_sqlite).customer(
        "900001", "Tipo Estranho Ltda", "fin@tipo.com.br", {"E1_TIPO": "ZZZ"}
    )
    result = _run_alone(tmp_path, demo_sqlite)
    rejected = {r["title"]: r["reason"] for r in result["rejected_titles"]}
    assert "E1_TIPO" in rejected[key]


def test_control_characters_stay_out_of_the_letter_bodies(demo_sqlite: str, tmp_path: Path) -> None:
    ErpWriter(demo_sqlite).customer("900009", CONTROL_NAME, "ana@cliente9.com.br", GOOD)
    result = _run_alone(tmp_path, demo_sqlite)
    assert result["error"] == ""
    letters = [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in (tmp_path / "outbox").glob("*.eml")
    ]
    (letter,) = [m for m in letters if "ana@cliente9.com.br" in str(m["To"])]
    for kind in ("plain", "html"):
        body = letter.get_body((kind,)).get_content()
        assert "Ana" in body and not CONTROL.search(body), kind


@pytest.mark.postgres
def test_nul_in_a_customer_name_does_not_stop_a_postgresql_history(
    demo_sqlite: str, tmp_path: Path, postgres_url: Callable[[], str]
) -> None:
    ErpWriter(demo_sqlite).customer("000000", CONTROL_NAME, "ana@cliente9.com.br", GOOD)
    history_url = postgres_url()
    owed = _owed(load_config(_config(tmp_path, demo_sqlite, history_url=history_url)))
    result = _run_alone(tmp_path, demo_sqlite, history_url)
    assert result["error"] == ""
    assert result["sent"] == sum(d is Disposition.SEND for d in owed.values())


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("field", "value"),
    [("E1_SALDO", float("nan")), ("E1_VALJUR", float("nan")), ("E1_SDACRES", float("inf"))],
)
def test_a_money_column_that_is_no_number_rejects_its_titulo_only(
    tmp_path: Path, postgres_url: Callable[[], str], field: str, value: float
) -> None:
    # PostgreSQL's double precision holds NaN and infinity (SQLite stores NaN as NULL).
    source_url = postgres_url()
    write_demo_database(source_url, customers=12, seed=7, as_of=AS_OF)
    erp = ErpWriter(source_url)
    bad, good = erp.customer("900001", "Numeros Estranhos Ltda", "fin@numeros.com.br",
                             {**GOOD, field: value}, GOOD)  # fmt: skip
    config = load_config(_config(tmp_path, source_url))
    result = run_layouts(config, as_of=AS_OF).results[0].as_dict()
    assert result["error"] == ""
    rejected = {r["title"]: r["reason"] for r in result["rejected_titles"]}
    assert rejected[bad].startswith(f"{field}: not a number")
    assert good not in rejected
    letters = [p.read_bytes() for p in (tmp_path / "outbox").glob("*.eml")]
    assert any(b"Numeros Estranhos" in letter for letter in letters)  # the good título's letter
    assert result["sent"] > 1  # every other customer's letter went out


def test_a_run_says_when_shared_customers_carry_a_branch(demo_sqlite: str, tmp_path: Path) -> None:
    engine = create_engine(demo_sqlite)
    with engine.begin() as connection:
        connection.execute(text("UPDATE sa1010 SET a1_filial = '02' WHERE a1_cod = '000001'"))
    engine.dispose()
    result = _run_alone(tmp_path, demo_sqlite)
    problems = {p["item"]: p["problem"] for p in result["data_problems"]}
    assert "branch (A1_FILIAL) '02'" in problems["source.customers_shared"]
    assert result["sent"] > 0  # the others' letters still go out


def test_every_problem_is_logged_and_the_summary_keeps_the_first_ones(
    demo_sqlite: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduled run has no summary on a terminal: the journal is where finance learns which
    títulos were left out and which customers need paper. A company-scale run may have
    hundreds of thousands of them, so its summary lists the first SUMMARY_LIMIT of each."""
    monkeypatch.setattr(runner, "SUMMARY_LIMIT", 2)
    erp = ErpWriter(demo_sqlite)
    negative, blank_due, _ = erp.customer(
        "900001", "Saldo Negativo Ltda", "fin@negativo.com.br",
        {"E1_SALDO": -50.0}, {"E1_VENCREA": ""}, GOOD,
    )  # fmt: skip
    text_balance, unknown_type, _ = erp.customer(
        "900002", "Texto no Saldo Ltda", "fin@texto.com.br", GOOD, {"E1_TIPO": "ZZZ"}, GOOD
    )
    with create_engine(demo_sqlite).begin() as connection:  # SQLite keeps text in a REAL column
        connection.execute(
            text("UPDATE se1010 SET e1_saldo = :saldo WHERE e1_cliente = '900002' AND e1_num = :n"),
            {"saldo": "12\r\nERROR cobranca: forged", "n": text_balance.split("|")[2]},
        )
    left_out = [negative, blank_due, text_balance, unknown_type]
    erp.customer("900003", "Enderecos Ruins Ltda", "ver com Adriana;b@@x;c@enderecos.com.br", GOOD)
    erp.customer("900004", "Outro Ruim Ltda", "financeiro@, d@outro.com.br", GOOD)
    erp.customer("900005", "Mais Um Ltda", "x@y e@maisum.com.br", GOOD)
    erp.customer("900006", "Sem Endereco Ltda", "ver com Adriana; b@@x", GOOD)  # paper

    caplog.set_level(logging.INFO, logger="cobranca")
    config = load_config(_config(tmp_path, demo_sqlite))
    report = run_layouts(config, as_of=AS_OF)
    (result,) = report.results
    messages = [r.getMessage() for r in caplog.records]

    # Each título left out is in the log with its key and why, on one line of its own.
    logged = {
        m.split("título ")[1].split(" left out")[0]: m for m in messages if " left out: " in m
    }
    assert set(left_out) <= set(logged)
    assert "E1_SALDO: negative" in logged[left_out[0]] and "E1_VENCREA" in logged[left_out[1]]
    assert "E1_SALDO: not a number" in logged[left_out[2]] and "E1_TIPO" in logged[left_out[3]]
    assert not any("\r" in m or "\n" in m for m in messages)
    # Customers whose A1_EMAIL entries were ignored, by code, never by what the entries say.
    ignored = [m for m in messages if "A1_EMAIL" in m and "ignored" in m]
    assert {m.split("customer ")[1].split(":")[0] for m in ignored} >= {
        "900003/01", "900004/01", "900005/01", "900006/01"
    }  # fmt: skip
    assert not any(entry in m for m in messages for entry in ("Adriana", "b@@x", "financeiro@"))
    # Every customer whose letter needs paper.
    printed = [m for m in messages if ": to print " in m]
    assert "layout todos-vencidos: customer 900006/01: to print (no usable e-mail address)" in (
        printed
    )
    assert len(printed) == result.print_needed > 2

    listed = result.as_dict()
    for name, count in (
        ("rejected_titles", len(logged)),
        ("invalid_emails", len(ignored)),
        ("prints", len(printed)),
    ):
        assert len(listed[name]) == 2 and listed["unlisted"][name] == count - 2, name
    assert listed["unlisted"]["failures"] == listed["unlisted"]["data_problems"] == 0
    assert {r["title"] for r in listed["rejected_titles"]} == {negative, blank_due}  # the first
    monkeypatch.setattr(summary, "MAX_LISTED", 1)
    shown = summary.format_text(report).splitlines()
    at = shown.index("  printed letters needed:")
    assert shown[at + 2] == f"    ... and {len(printed) - 1} more (each one is in the log)"
    assert result.sent > 0 and result.ok
