"""The daily run end to end: demo Protheus database → real SMTP server → history rows.

The expected letters are computed here independently, by reading every SE1/SA1 row in plain
Python (fine at test size), so the test does not trust the SQL it checks.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from babel.numbers import format_currency
from sqlalchemy import create_engine, text

from cobranca.config import load_config
from cobranca.history import HistoryStore
from cobranca.render import amount
from cobranca.runner import run_layouts
from conftest import AS_OF, SmtpServer, config_data, write_config

NEVER = {"RA", "PR", "PA", "TX", "TXA", "NCC", "NDF"}
PLAIN_ADDRESS = re.compile(r"(^|[;,\s])[\w.+-]+@[\w-]+(\.[\w-]+)+($|[;,\s])")


def brl(amount: Decimal) -> str:
    return format_currency(amount.quantize(Decimal("0.01"), ROUND_HALF_UP), "BRL", locale="pt_BR")


def _upper(row: Any) -> dict[str, Any]:
    return {key.upper(): value for key, value in row._mapping.items()}


def expected_letters(url: str, as_of: date, low: int, high: int) -> dict[str, dict[str, Any]]:
    """customer 'code/store' → {'emails', 'titles': {key: net balance}} by brute force."""
    engine = create_engine(url)
    with engine.connect() as connection:
        se1 = [_upper(r) for r in connection.execute(text("SELECT * FROM se1010"))]
        sa1 = [_upper(r) for r in connection.execute(text("SELECT * FROM sa1010"))]
    engine.dispose()
    customers = {
        (r["A1_COD"].strip(), r["A1_LOJA"].strip()): r for r in sa1 if r["D_E_L_E_T_"] != "*"
    }
    abatements: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for r in se1:
        if r["D_E_L_E_T_"] != "*" and r["E1_TIPO"][2:3] == "-" and r["E1_SALDO"] > 0:
            key = tuple(r[f].strip() for f in ("E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA",
                                               "E1_CLIENTE", "E1_LOJA"))  # fmt: skip
            abatements[key] += Decimal(str(r["E1_SALDO"]))
    letters: dict[str, dict[str, Any]] = {}
    for r in se1:
        kind = r["E1_TIPO"].strip()
        if r["D_E_L_E_T_"] == "*" or r["E1_SALDO"] <= 0 or kind in NEVER or kind[2:3] == "-":
            continue
        if r["E1_SITUACA"].strip() not in ("0", "1") or not r["E1_VENCREA"].strip():
            continue
        real_due = date.fromisoformat(
            f"{r['E1_VENCREA'][:4]}-{r['E1_VENCREA'][4:6]}-{r['E1_VENCREA'][6:]}"
        )
        if not low <= (as_of - real_due).days <= high:
            continue
        customer = customers.get((r["E1_CLIENTE"].strip(), r["E1_LOJA"].strip()))
        if customer is None or customer["A1_MSBLQL"] == "1":
            continue
        parts = [r[f].strip() for f in ("E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA")]
        owner = [r["E1_CLIENTE"].strip(), r["E1_LOJA"].strip()]
        net = Decimal(str(r["E1_SALDO"])).quantize(Decimal("0.01")) - abatements[
            (*parts, *owner)
        ].quantize(Decimal("0.01"))
        if net <= 0:
            continue
        who = "/".join(owner)
        entry = letters.setdefault(who, {"customer": customer, "titles": {}, "totals": {}})
        key = "|".join([*parts, kind, *owner])
        entry["titles"][key] = net
        entry["totals"][key] = _updated_total(r, net, as_of)
    return letters


def _updated_total(row: dict[str, Any], net: Decimal, as_of: date) -> Decimal:
    """What the letter must demand: net + simple interest (the test layouts set no fine).

    Written out again from shared/protheus.md, not taken from charges.py: days late from
    E1_VENCTO (the demo's due dates are never after E1_VENCREA's weekend shift), E1_PORCJUR
    % a day, else E1_VALJUR R$ a day, each rounded half-up to cents.
    """
    cents = Decimal("0.01")
    due = date.fromisoformat(
        f"{row['E1_VENCTO'][:4]}-{row['E1_VENCTO'][4:6]}-{row['E1_VENCTO'][6:]}"
    )
    days = (as_of - due).days
    rate = Decimal(str(row["E1_PORCJUR"]))
    if rate:
        interest = net * days * rate / 100
    else:
        interest = Decimal(str(row["E1_VALJUR"])).quantize(cents, ROUND_HALF_UP) * days
    additions = Decimal(str(row["E1_SDACRES"])).quantize(cents, ROUND_HALF_UP)
    deductions = Decimal(str(row["E1_SDDECRE"])).quantize(cents, ROUND_HALF_UP)
    total = net + interest.quantize(cents, ROUND_HALF_UP) + additions - deductions
    return max(total, Decimal("0.00"))


def run_and_collect(config_path: Path, as_of: date = AS_OF, **kwargs: Any) -> Any:
    config = load_config(config_path)
    return config, run_layouts(config, as_of=as_of, **kwargs)


def assert_delivered(source_url: str, history_url: str, smtp: SmtpServer, tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "cobranca.yaml",
        config_data(source_url=source_url, history_url=history_url, smtp=smtp),
    )
    config, report = run_and_collect(path)
    assert report.ok, report.as_dict()

    expected = expected_letters(source_url, AS_OF, 1, 15)
    assert expected, "the demo must have títulos 1-15 days late"
    by_customer = {mail.message["X-Cobranca-Layout"]: mail for mail in smtp.received}
    assert by_customer  # letters of both layouts arrived
    first_notices = [m for m in smtp.received if m.message["X-Cobranca-Layout"] == "primeiro-aviso"]

    history = HistoryStore(config.history.engine_url())
    letters = {
        f"{r.customer_code}/{r.customer_store}": r for r in history.letters(layout="primeiro-aviso")
    }
    history.close()
    assert set(letters) == set(expected)

    received_by_id = {str(m.message["Message-ID"]).strip(): m for m in first_notices}
    mailed = {who for who, r in letters.items() if r.status == "sent"}
    printed = {who for who, r in letters.items() if r.status == "print_needed"}
    assert mailed | printed == set(expected)
    assert len(first_notices) == len(mailed)
    for who in mailed:
        record = letters[who]
        mail = received_by_id[record.message_id]
        customer = expected[who]["customer"]
        raw_emails = customer["A1_EMAIL"].lower()
        assert mail.rcpt_tos and all(address in raw_emails for address in mail.rcpt_tos)
        assert mail.message["To"].addresses  # parsed as real addresses
        assert str(mail.message["Subject"]).startswith("Aviso de título em aberto – ")
        assert "\n" not in str(mail.message["Subject"])
        html = mail.message.get_body(("html",)).get_content()
        plain = mail.message.get_body(("plain",)).get_content()
        assert "<" not in plain.replace("<=", "")
        for key, balance in expected[who]["titles"].items():
            number = key.split("|")[2]
            assert number in html and number in plain
            # Table cells carry amounts without "R$" (the table is headed "valores em R$").
            assert amount(balance) in html and amount(balance) in plain
            updated = expected[who]["totals"][key]
            assert amount(updated) in html and amount(updated) in plain
        demanded = sum(expected[who]["totals"].values(), Decimal("0.00"))
        assert brl(demanded) in html
        # The history keeps the balances the letter listed; the message itself, with the
        # charges, is stored whole (raw_message).
        assert record.total == sum(expected[who]["titles"].values(), Decimal("0.00"))
        assert {t.title_key: t.balance for t in record.titles} == expected[who]["titles"]
        assert record.sent_at is not None
    for who in printed:
        raw = expected[who]["customer"]["A1_EMAIL"]
        assert not PLAIN_ADDRESS.search(raw), f"{who} has a usable e-mail but was sent to print"

    # A second run the same day sends nothing new: cadence, backed by the history's unique key.
    before = len(smtp.received)
    _, again = run_and_collect(path)
    assert again.ok
    assert len(smtp.received) == before
    second = {r.layout: r for r in again.results}
    assert second["primeiro-aviso"].sent == 0
    # Today's letters exist already: the unique key, not the cadence, turns them away.
    assert second["primeiro-aviso"].skipped["already_claimed"] == len(expected)


def test_daily_run_on_sqlite(demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path) -> None:
    assert_delivered(demo_sqlite, f"sqlite:///{tmp_path / 'history.db'}", smtp_server, tmp_path)


@pytest.mark.postgres
def test_daily_run_on_postgresql(
    postgres_url: Any, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    from cobranca.demo import write_demo_database

    source = postgres_url()
    write_demo_database(source, customers=40, seed=7, as_of=AS_OF)
    assert_delivered(source, postgres_url(), smtp_server, tmp_path)


def test_dry_run_sends_and_records_nothing(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=history_url, smtp=smtp_server),
    )
    config, report = run_and_collect(path, dry_run=True)
    assert report.ok
    assert sum(r.would_send for r in report.results) > 0
    assert smtp_server.received == []
    history = HistoryStore(config.history.engine_url())
    assert history.letters() == [] and history.runs() == []
    history.close()


def test_later_day_within_cadence_is_skipped_and_after_it_is_sent(
    demo_sqlite: str, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        config_data(
            source_url=demo_sqlite,
            history_url=f"sqlite:///{tmp_path / 'h.db'}",
            outbox=tmp_path / "outbox",
        ),
    )
    config = load_config(path)
    first = run_layouts(config, ["primeiro-aviso"], as_of=AS_OF).results[0]
    assert first.sent > 0
    # Títulos 1..15 days late today are 2..16 days late tomorrow: most customers still match.
    tomorrow = run_layouts(config, ["primeiro-aviso"], as_of=AS_OF + timedelta(days=1))
    assert tomorrow.results[0].skipped["cadence"] > 0
    assert tomorrow.results[0].sent < first.sent
    outbox_files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(outbox_files) == first.sent + tomorrow.results[0].sent


def test_history_from_another_schema_version_is_refused_clearly(
    demo_sqlite: str, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, text

    history_file = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{history_file}")
    with engine.begin() as connection:  # what the first release left behind
        connection.execute(text("CREATE TABLE cobranca_letters (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    path = write_config(
        tmp_path / "c.yaml",
        config_data(source_url=demo_sqlite, history_url=f"sqlite:///{history_file}",
                    outbox=tmp_path / "outbox"),
    )  # fmt: skip
    report = run_layouts(load_config(path), as_of=AS_OF)
    assert not report.ok
    assert "schema version 1, this cobranca needs 2" in report.results[0].error
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())
