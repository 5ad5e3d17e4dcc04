"""`cobranca titles`: finance's list of open títulos, checked against the demo database.

The expected títulos are computed here independently, by reading every SE1/SA1 row in plain
Python (as tests/test_daily_run.py does for letters), so the tests do not trust the SQL they
check.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import time_machine
from babel.numbers import format_currency
from sqlalchemy import create_engine, event, text

from cobranca import listing
from cobranca.config import Source, load_config
from cobranca.history import HistoryStore
from cobranca.listing import add_titles_parser, titles_command
from cobranca.runner import run_layouts
from cobranca.source import ProtheusSource, TitleFilter
from conftest import (
    AS_OF,
    LAYOUTS,
    config_data,
    insert_day_of_letters,
    sqlite_query_plan,
    write_config,
)

CENTS = Decimal("0.01")
NEVER = {"RA", "PR", "PA", "TX", "TXA", "NCC", "NDF"}
COLLECTIBLE = set(Source.model_fields["collectible_types"].default)
KEY_FIELDS = ("E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA", "E1_TIPO", "E1_CLIENTE", "E1_LOJA")


# --- the oracle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    key: str
    customer: str  # CODE/STORE
    name: str
    short_name: str
    blocked: bool
    branch: str
    type: str
    situation: str
    real_due: date
    days_from_due: int
    net: Decimal
    abatements: Decimal


def _upper(row: Any) -> dict[str, Any]:
    return {key.upper(): value for key, value in row._mapping.items()}


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENTS, ROUND_HALF_UP)


def expected_titles(url: str, as_of: date = AS_OF) -> dict[str, Expected]:
    """Every open título the list must show, keyed by its Protheus key, by brute force."""
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
            main = tuple(r[f].strip() for f in KEY_FIELDS if f != "E1_TIPO")
            abatements[main] += Decimal(str(r["E1_SALDO"]))
    found: dict[str, Expected] = {}
    for r in se1:
        kind = r["E1_TIPO"].strip()
        if r["D_E_L_E_T_"] == "*" or r["E1_SALDO"] <= 0 or kind in NEVER or kind[2:3] == "-":
            continue
        if kind not in COLLECTIBLE or not r["E1_VENCREA"].strip():
            continue
        customer = customers.get((r["E1_CLIENTE"].strip(), r["E1_LOJA"].strip()))
        if customer is None:
            continue
        key_parts = [r[f].strip() for f in KEY_FIELDS]
        main = tuple(p for f, p in zip(KEY_FIELDS, key_parts, strict=True) if f != "E1_TIPO")
        abated = abatements[main]
        net = _money(r["E1_SALDO"]) - abated.quantize(CENTS, ROUND_HALF_UP)
        if net <= 0:
            continue
        vencrea = r["E1_VENCREA"]
        real_due = date(int(vencrea[:4]), int(vencrea[4:6]), int(vencrea[6:8]))
        key = "|".join(key_parts)
        found[key] = Expected(
            key=key,
            customer=f"{key_parts[5]}/{key_parts[6]}",
            name=customer["A1_NOME"].strip(),
            short_name=customer["A1_NREDUZ"].strip(),
            blocked=customer["A1_MSBLQL"] == "1",
            branch=key_parts[0],
            type=kind,
            situation=r["E1_SITUACA"].strip(),
            real_due=real_due,
            days_from_due=(as_of - real_due).days,
            net=net,
            abatements=abated.quantize(CENTS, ROUND_HALF_UP),
        )
    return found


def names(e: Expected) -> str:
    return f"{e.name}\n{e.short_name}".lower()


def brl(amount: Decimal) -> str:
    return format_currency(amount.quantize(CENTS, ROUND_HALF_UP), "BRL", locale="pt_BR")


# --- running the command --------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    def csv(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.out)))

    def json(self) -> Any:
        return json.loads(self.out)

    def listed(self) -> set[str]:
        return {row["key"] for row in self.csv()}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cobranca")
    add_titles_parser(root.add_subparsers(dest="command", required=True), [])
    return root


Run = Callable[..., Result]


@pytest.fixture
def config_path(demo_sqlite: str, tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "cobranca.yaml",
        config_data(
            source_url=demo_sqlite,
            history_url=f"sqlite:///{tmp_path / 'history.db'}",
            outbox=tmp_path / "outbox",
        ),
    )


@pytest.fixture
def titles(config_path: Path) -> Run:
    """titles('--format', 'csv', ...) → Result, as of AS_OF."""

    def run(*argv: str) -> Result:
        args = parser().parse_args(["titles", "--as-of", AS_OF.isoformat(), *argv])
        out, err = io.StringIO(), io.StringIO()
        code = titles_command(load_config(config_path), args, out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    return run


def execute(url: str, sql: str, **params: Any) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(sql), params)
    engine.dispose()


# --- totals ---------------------------------------------------------------------------------


def test_csv_lists_every_open_titulo_with_its_net_balance(demo_sqlite: str, titles: Run) -> None:
    expected = expected_titles(demo_sqlite)
    result = titles("--format", "csv")
    assert result.code == 0, result.err
    rows = result.csv()
    assert len(rows) == len({r["key"] for r in rows})  # one row per título
    assert {r["key"]: Decimal(r["net_balance"]) for r in rows} == {
        k: e.net for k, e in expected.items()
    }
    total = sum((e.net for e in expected.values()), Decimal("0.00"))
    assert sum((Decimal(r["net_balance"]) for r in rows), Decimal("0.00")) == total
    # The demo's traps are really in the data, so the equality above means something.
    abated = [r for r in rows if Decimal(r["abatements"]) > 0]
    assert abated and all(
        Decimal(r["net_balance"]) == Decimal(r["balance"]) - Decimal(r["abatements"])
        for r in abated
    )
    engine = create_engine(demo_sqlite)
    with engine.connect() as connection:
        kinds = {t.strip() for (t,) in connection.execute(text("SELECT e1_tipo FROM se1010"))}
        deleted = connection.scalar(text("SELECT count(*) FROM se1010 WHERE d_e_l_e_t_ = '*'"))
    engine.dispose()
    assert {"RA", "NCC", "AB-"} <= kinds and deleted
    assert not {r["type"] for r in rows} & (NEVER | {"AB-", "IR-"})
    # Machine-readable: ISO dates, plain dot decimals, header row.
    assert rows[0].keys() >= {"key", "real_due_date", "days_from_due", "net_balance"}
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["real_due_date"]) for r in rows)
    assert all(re.fullmatch(r"\d+\.\d{2}", r["net_balance"]) for r in rows)

    table = titles("--format", "table")
    assert f"TOTAL: {len(expected)} títulos" in table.out
    assert re.search(rf"TOTAL: .*{re.escape(brl(total))}\n", table.out)


# --- filters --------------------------------------------------------------------------------

Case = tuple[list[str], Callable[[Expected], bool]]
FILTERS: dict[str, Case] = {
    "customer": (["--customer", "000001"], lambda e: e.customer.startswith("000001/")),
    "customer and store": (["--customer", "000010/02"], lambda e: e.customer == "000010/02"),
    "customers": (
        ["--customer", "000002,000003", "--customer", "000020/02"],
        lambda e: e.customer in ("000002/01", "000003/01", "000020/02"),
    ),
    "name, any case": (["--name", "COSTA"], lambda e: "costa" in names(e)),
    # Customer 000011's A1_NOME is "Materiais de Construção Ferreira": only A1_NREDUZ matches.
    "short name too": (["--name", "Santo Ant"], lambda e: "santo ant" in names(e)),
    "branch": (["--branch", "02"], lambda e: e.branch == "02"),
    "due range": (
        ["--due-from", (AS_OF - timedelta(days=30)).isoformat(), "--due-to", AS_OF.isoformat()],
        lambda e: AS_OF - timedelta(days=30) <= e.real_due <= AS_OF,
    ),
    "days late range": (
        ["--days-late-min", "16", "--days-late-max", "45"],
        lambda e: 16 <= e.days_from_due <= 45,
    ),
    "not yet due": (["--days-late-max", "0"], lambda e: e.days_from_due <= 0),
    "stricter of days and due date": (
        ["--days-late-max", "20", "--due-from", (AS_OF - timedelta(days=60)).isoformat()],
        lambda e: e.days_from_due <= 20,
    ),
    "days and due date together": (
        ["--days-late-min", "1", "--due-from", (AS_OF - timedelta(days=10)).isoformat()],
        lambda e: 1 <= e.days_from_due <= 10,
    ),
    "min balance on the net": (["--min-balance", "10000.00"], lambda e: e.net >= 10000),
    "min balance, comma": (["--min-balance", "5000,5"], lambda e: e.net >= Decimal("5000.50")),
    "type": (["--type", "NF"], lambda e: e.type == "NF"),
    "types": (["--type", "DP,BOL"], lambda e: e.type in ("DP", "BOL")),
    "situation": (["--situation", "5", "--situation", "6"], lambda e: e.situation in ("5", "6")),
    "everything at once": (
        ["--type", "NF", "--situation", "0,1", "--days-late-min", "1", "--branch", "01"],
        lambda e: (
            e.type == "NF"
            and e.situation in ("0", "1")
            and e.days_from_due >= 1
            and e.branch == "01"
        ),
    ),
}


@pytest.mark.parametrize("case", FILTERS.values(), ids=list(FILTERS))
def test_each_filter_narrows_to_exactly_the_matching_titulos(
    demo_sqlite: str, titles: Run, case: Case
) -> None:
    argv, keep = case
    everything = expected_titles(demo_sqlite)
    wanted = {k for k, e in everything.items() if keep(e)}
    assert wanted and len(wanted) < len(everything), "the case must narrow the demo's list"
    result = titles("--format", "csv", *argv)
    assert result.code == 0, result.err
    assert result.listed() == wanted


def test_min_balance_is_on_the_balance_net_of_abatements(demo_sqlite: str, titles: Run) -> None:
    abated = next(e for e in expected_titles(demo_sqlite).values() if e.abatements > 0)
    gross = abated.net + abated.abatements
    at_net = titles("--format", "csv", "--customer", abated.customer, "--min-balance",
                    str(abated.net))  # fmt: skip
    assert abated.key in at_net.listed()
    above_net = titles("--format", "csv", "--customer", abated.customer, "--min-balance",
                       str(abated.net + CENTS))  # fmt: skip
    assert abated.net + CENTS <= gross and abated.key not in above_net.listed()


def test_title_keys_select_exactly_those_titulos(demo_sqlite: str, titles: Run) -> None:
    everything = expected_titles(demo_sqlite)
    with_installment = next(k for k in everything if k.split("|")[3])
    blank_installment = next(k for k in everything if not k.split("|")[3])
    result = titles("--format", "csv", "--title", with_installment, "--title", blank_installment)
    assert result.listed() == {with_installment, blank_installment}
    # Parts are compared trimmed, as Protheus pads them; another installment is another título.
    spaced = " | ".join(with_installment.split("|"))
    assert titles("--format", "csv", "--title", spaced).listed() == {with_installment}
    parts = with_installment.split("|")
    parts[3] = "Z"
    assert titles("--title", "|".join(parts)).out.strip() == "no open títulos match"


def test_name_fragment_is_literal_not_a_like_pattern(demo_sqlite: str, titles: Run) -> None:
    execute(demo_sqlite, "UPDATE sa1010 SET a1_nome = 'Laticínios 100% Souza Ltda' "
            "WHERE a1_cod = '000003'")  # fmt: skip
    everything = expected_titles(demo_sqlite)
    souza = {k for k, e in everything.items() if e.customer == "000003/01"}
    assert souza
    assert titles("--format", "csv", "--name", "%").listed() == souza
    assert titles("--format", "csv", "--name", "0% s").listed() == souza
    slash = {k for k, e in everything.items() if "s/a" in (e.name + e.short_name).lower()}
    assert slash and titles("--format", "csv", "--name", "s/a").listed() == slash  # the escape
    for pattern in ("_", "%%", "Latic_nios", "a%z", "//", "[a-z]", "%s/a"):
        result = titles("--name", pattern)
        assert (result.code, result.out.strip()) == (0, "no open títulos match"), pattern
    hostile = titles("--format", "csv", "--name", "x' OR '1'='1")
    assert hostile.code == 0 and hostile.listed() == set()


def test_filter_values_are_bound_parameters(demo_sqlite: str) -> None:
    source = ProtheusSource(Source.model_validate({"url": demo_sqlite}))
    try:
        wanted = TitleFilter(
            customers=("000001'OR'1'='1",), name_contains="'; DROP TABLE sa1010; --",
            types=("NF' OR 'x'='x",), title_keys=("01|NF|1' OR '1'='1||NF|000001|01",),
        )  # fmt: skip
        sql = str(source.filter_statement(wanted, AS_OF).compile())
        assert "DROP" not in sql and "'1'='1" not in sql and "'x'='x" not in sql
        assert list(source.open_titles(wanted, AS_OF)) == []
    finally:
        source.close()


# --- a layout's selection -------------------------------------------------------------------


Selected = tuple[dict[str, Any], Callable[[Expected], bool]]


def _at_an_abated_gross(everything: dict[str, Expected]) -> Selected:
    """A minimum that an abated título's gross balance reaches and its net does not."""
    abated = next(e for e in everything.values() if e.abatements > 0)
    minimum = abated.net + abated.abatements
    situations = sorted({e.situation for e in everything.values()})
    selection = {"days": {}, "min_balance": str(minimum), "situations": situations,
                 "skip_blocked": False}  # fmt: skip
    return selection, lambda e: e.net >= minimum


LAYOUT_CASES: dict[str, Callable[[dict[str, Expected]], Selected]] = {
    # primeiro-aviso as conftest writes it: 1–15 days, situations 0 and 1, active customers.
    "primeiro-aviso": lambda _: (
        {},
        lambda e: 1 <= e.days_from_due <= 15 and e.situation in ("0", "1") and not e.blocked,
    ),
    "grandes": lambda _: (
        {"days": {"min": 16}, "min_balance": "10000.00", "situations": ["0", "1", "5"],
         "skip_blocked": False, "types": {"exclude": ["BOL"]}},
        lambda e: e.days_from_due >= 16 and e.net >= 10000 and e.situation in ("0", "1", "5")
        and e.type != "BOL",
    ),
    "liquido": _at_an_abated_gross,
}  # fmt: skip


@pytest.mark.parametrize("name", list(LAYOUT_CASES))
def test_layout_lists_what_the_layout_selects(demo_sqlite: str, tmp_path: Path, name: str) -> None:
    everything = expected_titles(demo_sqlite)
    selection, keep = LAYOUT_CASES[name](everything)
    layouts = [dict(layout) for layout in LAYOUTS]
    if selection:
        layouts.append({**LAYOUTS[1], "name": name, "selection": selection})
    path = write_config(
        tmp_path / "layouts.yaml",
        config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    outbox=tmp_path / "outbox", layouts=layouts),
    )  # fmt: skip
    config = load_config(path)

    def run(*argv: str) -> Result:
        args = parser().parse_args(["titles", "--as-of", AS_OF.isoformat(), *argv])
        out, err = io.StringIO(), io.StringIO()
        return Result(titles_command(config, args, out=out, err=err), out.getvalue(),
                      err.getvalue())  # fmt: skip

    wanted = {k for k, e in everything.items() if keep(e)}
    assert wanted and len(wanted) < len(everything)
    result = run("--format", "csv", "--layout", name)
    assert result.code == 0, result.err
    assert result.listed() == wanted

    # The same títulos the layout's own reading yields, after the plan's minimum on the net.
    layout = config.layout(name)
    source = ProtheusSource(config.source)
    try:
        selected = {
            t.key
            for g in source.customers_titles(layout.selection, AS_OF)
            for t in g.titles
            if t.net_balance >= layout.selection.min_balance
        }
    finally:
        source.close()
    assert selected == wanted

    one = next(iter(wanted)).split("|")[5]
    narrowed = run("--format", "csv", "--layout", name, "--customer", one)
    assert narrowed.listed() == {k for k in wanted if k.split("|")[5] == one}


# --- aging, JSON and CSV --------------------------------------------------------------------

BUCKETS = {
    "not_due": (None, 0), "1-15": (1, 15), "16-30": (16, 30), "31-60": (31, 60),
    "61-90": (61, 90), "over-90": (91, None),
}  # fmt: skip


def test_aging_buckets_sum_to_the_grand_total(demo_sqlite: str, titles: Run) -> None:
    expected = expected_titles(demo_sqlite)
    document = titles("--format", "json").json()
    aging = {entry["bucket"]: entry for entry in document["aging"]}
    assert list(aging) == list(BUCKETS)
    total = Decimal(document["totals"]["balance"])
    assert total == sum((e.net for e in expected.values()), Decimal("0.00"))
    assert sum(Decimal(a["balance"]) for a in aging.values()) == total
    assert sum(a["titles"] for a in aging.values()) == document["totals"]["titles"]
    for code, (low, high) in BUCKETS.items():
        inside = [
            e for e in expected.values()
            if (low is None or e.days_from_due >= low) and (high is None or e.days_from_due <= high)
        ]  # fmt: skip
        assert aging[code]["titles"] == len(inside), code
        assert Decimal(aging[code]["balance"]) == sum((e.net for e in inside), Decimal("0")), code
    assert sum(1 for a in aging.values() if a["titles"]) >= 4  # the demo spreads over buckets

    table = titles().out
    assert re.search(rf"\n  total +{len(expected)} +{re.escape(brl(total))}\n", table)
    for entry in document["aging"]:
        line = rf"\n  {re.escape(entry['label'])} +{entry['titles']} +"
        assert re.search(line + re.escape(brl(Decimal(entry["balance"]))), table)


def test_json_parses_and_matches_csv(titles: Run) -> None:
    rows = titles("--format", "csv", "--customer", "000001,000002,000007,000010").csv()
    document = titles("--format", "json", "--customer", "000001,000002,000007,000010").json()
    assert rows and len(document["titles"]) == len(rows)

    def as_csv(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    assert [{k: as_csv(v) for k, v in t.items()} for t in document["titles"]] == rows
    assert document["as_of"] == AS_OF.isoformat()
    assert document["totals"] == {
        "titles": len(rows),
        "customers": len({(r["customer_code"], r["customer_store"]) for r in rows}),
        "balance": str(sum(Decimal(r["net_balance"]) for r in rows)),
    }
    assert document["rejected"] == []


def test_empty_result_says_so_and_exits_0(titles: Run) -> None:
    table = titles("--customer", "999999")
    assert (table.code, table.out) == (0, "no open títulos match\n")
    as_csv = titles("--format", "csv", "--customer", "999999")
    assert as_csv.code == 0 and as_csv.csv() == [] and as_csv.out.startswith("customer_code,")
    assert "no open títulos match" in as_csv.err
    as_json = titles("--format", "json", "--customer", "999999")
    document = as_json.json()
    assert document["titles"] == [] and document["totals"]["balance"] == "0.00"
    assert "no open títulos match" in as_json.err


# --- the table ------------------------------------------------------------------------------


SUBTOTAL = re.compile(r"^  subtotal (\S+): (\d+) títulos? +(R\$\xa0[\d.,]+)$", re.MULTILINE)


def test_table_shows_pt_br_money_dates_and_subtotals(demo_sqlite: str, titles: Run) -> None:
    expected = expected_titles(demo_sqlite)
    one = {k: e for k, e in expected.items() if e.customer == "000001/01"}
    out = titles("--customer", "000001/01").out
    assert re.search(r"R\$\xa0\d{1,3}(\.\d{3})+,\d{2}", out)  # R$ 1.234,56 with a no-break space
    for key, e in one.items():
        number = key.split("|")[2]
        row = next(line for line in out.splitlines() if f" {number} " in line)
        assert e.real_due.strftime("%d/%m/%Y") in row
        assert row.rstrip().endswith(brl(e.net))
        assert re.search(rf"\s{e.days_from_due}\s", row)
    subtotal = sum((e.net for e in one.values()), Decimal("0.00"))
    assert re.search(rf"subtotal 000001/01: {len(one)} títulos? +{re.escape(brl(subtotal))}", out)
    assert one[next(iter(one))].short_name in out

    everyone = titles().out
    subtotals = {who: (int(count), amount) for who, count, amount in SUBTOTAL.findall(everyone)}
    by_customer: dict[str, list[Decimal]] = defaultdict(list)
    for e in expected.values():
        by_customer[e.customer].append(e.net)
    assert subtotals == {
        who: (len(nets), brl(sum(nets, Decimal("0.00")))) for who, nets in by_customer.items()
    }


def test_rejected_titulos_are_listed_at_the_end_on_stderr(demo_sqlite: str, titles: Run) -> None:
    main_row = "01|ZZ|000000777||NF|000001|01"
    execute(
        demo_sqlite,
        "INSERT INTO se1010 SELECT e1_filial, e1_prefixo, :num, e1_parcela, e1_tipo, e1_cliente,"
        " e1_loja, e1_nomcli, e1_emissao, e1_vencto, :vencrea, e1_baixa, e1_valor, e1_saldo,"
        " e1_valjur, e1_porcjur, e1_multa, e1_juros, e1_sdacres, e1_sddecre, e1_situaca,"
        " e1_portado, e1_numbco, e1_codbar, e1_coddig, e1_moeda, e1_hist, d_e_l_e_t_,"
        " (SELECT max(r_e_c_n_o_) + 1 FROM se1010) FROM se1010"
        " WHERE e1_cliente = '000001' AND e1_tipo = 'NF ' AND e1_saldo > 0 LIMIT 1",
        num="000000666", vencrea=" " * 8,
    )  # fmt: skip
    for kind, saldo, recno in (("NF ", 100.0, 900001), ("AB-", 100.0, 900002)):
        execute(
            demo_sqlite,
            "INSERT INTO se1010 SELECT '01', 'ZZ ', '000000777', '  ', :kind, e1_cliente,"
            " e1_loja, e1_nomcli, e1_emissao, e1_vencto, e1_vencrea, e1_baixa, :saldo, :saldo,"
            " 0, 0, 0, 0, 0, 0, '0', e1_portado, e1_numbco, e1_codbar, e1_coddig, 1, e1_hist,"
            " ' ', :recno FROM se1010 WHERE e1_cliente = '000001' AND e1_saldo > 0 LIMIT 1",
            kind=kind, saldo=saldo, recno=recno,
        )  # fmt: skip
    result = titles("--customer", "000001")
    assert result.code == 0
    assert "000000666" not in result.out and "000000777" not in result.out
    assert "2 título(s) left out" in result.err
    assert re.search(r"\|000000666\|.*: real due date \(E1_VENCREA\) is blank", result.err)
    assert f"{main_row}: nothing owed after abatements" in result.err
    rejected = titles("--format", "json", "--customer", "000001").json()["rejected"]
    assert {r["reason"] for r in rejected} == {
        "nothing owed after abatements", "real due date (E1_VENCREA) is blank"
    }  # fmt: skip


# --- the last letter ------------------------------------------------------------------------


def test_last_letter_shows_the_letter_sent_after_a_run(config_path: Path, titles: Run) -> None:
    before = titles("--format", "csv").csv()
    assert before and all(r["last_letter_layout"] == "" for r in before)

    config = load_config(config_path)
    # Two runs, one after the other: customers with a título 1–15 days late and another due in
    # 3 days get both letters, and the reminder is the one sent last. Late in the evening in
    # São Paulo it is already the next day in UTC: the date shown is the local one.
    evening = datetime(AS_OF.year, AS_OF.month, AS_OF.day, 23, 30, tzinfo=config.zone)
    with time_machine.travel(evening, tick=True):
        for layout in ("primeiro-aviso", "lembrete-vencimento"):
            report = run_layouts(config, [layout], as_of=AS_OF)
            assert report.ok and report.results[0].sent > 0
    history = HistoryStore(config.history.engine_url())
    letters = history.letters()
    history.close()
    last: dict[str, Any] = {}
    for r in sorted((r for r in letters if r.status == "sent"), key=lambda r: (r.sent_at, r.id)):
        last[f"{r.customer_code}/{r.customer_store}"] = r
    sent = {who: (r.layout, r.sent_at.astimezone(config.zone).date()) for who, r in last.items()}
    assert {day for _, day in sent.values()} == {AS_OF}
    both = {
        f"{r.customer_code}/{r.customer_store}" for r in letters
        if r.layout == "primeiro-aviso" and r.status == "sent"
    } & {who for who, (layout, _) in sent.items() if layout == "lembrete-vencimento"}  # fmt: skip
    printed = {f"{r.customer_code}/{r.customer_store}" for r in letters
               if r.status == "print_needed"} - set(sent)  # fmt: skip
    assert both and printed

    rows = titles("--format", "csv").csv()
    for row in rows:
        who = f"{row['customer_code']}/{row['customer_store']}"
        if who in sent:
            layout, day = sent[who]
            assert (row["last_letter_layout"], row["last_letter_date"]) == (
                layout, day.isoformat()
            ), who  # fmt: skip
        else:  # no letter, or one that still needs printing: nothing was sent
            assert row["last_letter_layout"] == row["last_letter_date"] == "", who
    shown = {f"{r['customer_code']}/{r['customer_store']}" for r in rows}
    assert printed & shown and both <= shown

    table = titles().out
    for who in (sorted(both)[0], sorted(set(sent) - both)[0]):
        layout, day = sent[who]
        block = table.split(f"\n{who}  ", 1)[1].split("\n", 1)[0]
        assert f"last letter: {layout} on {day:%d/%m/%Y}" in block
    assert "last letter: none" in table

    quiet = titles("--no-last-letter")
    assert "last letter" not in quiet.out
    assert all(
        r["last_letter_layout"] == "" for r in titles("--format", "csv", "--no-last-letter").csv()
    )


def test_listing_never_creates_the_history(config_path: Path, tmp_path: Path, titles: Run) -> None:
    result = titles()
    assert result.code == 0 and "last letter: none" in result.out
    assert not (tmp_path / "history.db").exists()


def test_history_is_read_once_per_batch_while_rows_stream(
    config_path: Path, titles: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output is written while the source still streams; one history query per batch."""
    run_layouts(load_config(config_path), ["primeiro-aviso"], as_of=AS_OF)
    monkeypatch.setattr(listing, "BATCH_CUSTOMERS", 5)
    queries: list[int] = []
    real_last_letters = listing.LastLetterReader.last_letters

    def counting(self: Any, customers: Any) -> Any:
        customers = list(customers)
        queries.append(len(customers))
        return real_last_letters(self, customers)

    monkeypatch.setattr(listing.LastLetterReader, "last_letters", counting)
    written_when_yielding: list[int] = []
    real_open_titles = ProtheusSource.open_titles
    out = io.StringIO()

    def watched(self: Any, wanted: Any, as_of: date) -> Any:
        for group in real_open_titles(self, wanted, as_of):
            written_when_yielding.append(out.getvalue().count("\n"))
            yield group

    monkeypatch.setattr(ProtheusSource, "open_titles", watched)
    args = parser().parse_args(["titles", "--as-of", AS_OF.isoformat(), "--format", "csv"])
    assert titles_command(load_config(config_path), args, out=out, err=io.StringIO()) == 0
    customers = len(written_when_yielding)
    assert customers > 10
    assert queries and all(n <= 5 for n in queries) and sum(queries) == customers
    assert len(queries) == -(-customers // 5)
    # The first batch was written before the source yielded the sixth customer.
    assert written_when_yielding[5] > 1
    assert any("primeiro-aviso" in line for line in out.getvalue().splitlines()[1:])


# --- bad arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--due-from", "2026-12-10", "--due-to", "2026-12-01"], "is after due-to"),
        (["--days-late-min", "30", "--days-late-max", "10"], "greater than days-late-max"),
        (["--layout", "terceiro-aviso"], "unknown layout 'terceiro-aviso'"),
        (["--layout", "primeiro-aviso", "--name", "x"], "combines only with --customer"),
        (["--title", "01|NF|123"], "must have 7 parts"),
        (["--customer", "0001/01/02"], "is not CODE or CODE/STORE"),
        (["--name", "  "], "--name needs some text"),
        (["--days-late-max", "99999999"], "beyond"),
    ],
    ids=["due range", "days range", "layout", "layout+filter", "key", "customer", "name", "days"],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    titles: Run, argv: list[str], message: str
) -> None:
    result = titles(*argv)
    assert result.code == 2
    assert message in result.err and result.out == ""


@pytest.mark.parametrize(
    "argv",
    [["--min-balance", "1.234,56"], ["--min-balance", "-1"], ["--min-balance", "0.001"],
     ["--min-balance", "1e30"], ["--min-balance", "NaN"], ["--min-balance", "R$ 10"],
     ["--due-from", "04/12/2026"], ["--days-late-min", "ten"], ["--format", "xlsx"]],
)  # fmt: skip
def test_malformed_values_are_refused_by_the_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["titles", *argv])
    assert exit_info.value.code == 2
    assert "titles" in capsys.readouterr().err


def test_default_output_goes_to_stdout(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parser().parse_args(["titles", "--as-of", AS_OF.isoformat(), "--customer", "000001"])
    assert titles_command(load_config(config_path), args) == 0
    out = capsys.readouterr().out
    assert out.startswith("Open títulos as of 04/12/2026") and "subtotal 000001/01" in out


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_filters_and_totals_on_postgresql(postgres_url: Any, tmp_path: Path) -> None:
    from cobranca.demo import write_demo_database

    source = postgres_url()
    write_demo_database(source, customers=40, seed=7, as_of=AS_OF)
    execute(source, "UPDATE sa1010 SET a1_nome = 'Laticínios 100% Souza Ltda' "
            "WHERE a1_cod = '000003'")  # fmt: skip
    path = write_config(
        tmp_path / "pg.yaml",
        config_data(source_url=source, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    outbox=tmp_path / "outbox"),
    )  # fmt: skip

    def run(*argv: str) -> Result:
        args = parser().parse_args(["titles", "--as-of", AS_OF.isoformat(), *argv])
        out, err = io.StringIO(), io.StringIO()
        return Result(titles_command(load_config(path), args, out=out, err=err), out.getvalue(),
                      err.getvalue())  # fmt: skip

    everything = expected_titles(source)
    rows = run("--format", "csv").csv()
    assert {r["key"]: Decimal(r["net_balance"]) for r in rows} == {
        k: e.net for k, e in everything.items()
    }
    assert run("--format", "csv", "--name", "%").listed() == {
        k for k, e in everything.items() if e.customer == "000003/01"
    }
    assert run("--format", "csv", "--name", "ÇOUGUE").listed() == {
        k for k, e in everything.items() if "çougue" in (e.name + e.short_name).lower()
    }  # PostgreSQL folds accented capitals too
    blank = next(k for k in everything if not k.split("|")[3])
    assert run("--format", "csv", "--title", blank).listed() == {blank}
    for argv, keep in FILTERS.values():
        assert run("--format", "csv", *argv).listed() == {
            k for k, e in everything.items() if keep(e)
        }, argv


def test_last_letters_probe_a_customer_index_without_statistics(tmp_path: Path) -> None:
    """A batch of customers' last letters reads their letters, not every letter sent: at 1M
    títulos (177,149 letters) reading them all for each batch took `titles` 219 s, not 28.
    No ANALYZE, as in a history that grew by itself."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history = HistoryStore(url)
    try:
        insert_day_of_letters(
            history, 2_000, status="sent", sent_at=datetime(2026, 12, 4, tzinfo=UTC)
        )
    finally:
        history.close()
    data = config_data(source_url=f"sqlite:///{tmp_path / 'erp.db'}", history_url=url,
                       outbox=tmp_path / "outbox")  # fmt: skip
    reader = listing.LastLetterReader(load_config(write_config(tmp_path / "c.yaml", data)),
                                      io.StringIO())  # fmt: skip
    statements: list[tuple[str, Any]] = []
    event.listen(reader.engine, "before_cursor_execute",
                 lambda _c, _k, sql, params, *_: statements.append((sql, params)))  # fmt: skip
    wanted = [f"{n:06d}" for n in range(700, 900)]
    customers = [SimpleNamespace(code=code, store="01") for code in wanted]
    try:
        found = reader.last_letters(customers)  # type: ignore[arg-type]
        assert sorted(code for code, _ in found) == wanted
        ((sql, params),) = statements
        plan = sqlite_query_plan(reader.engine, sql, params)
    finally:
        reader.close()
    assert any(
        "USING INDEX ix_letter_status_customer (status=? AND customer_code=?)" in step
        for step in plan
    ), plan
