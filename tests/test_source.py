"""ProtheusSource against small, hand-made SE1/SA1 tables.

Every test writes exactly the rows it relies on; every other column holds what Protheus stores
for "nothing": CHAR fields as spaces to their declared width, dates as 8 spaces, numbers 0,
D_E_L_E_T_ ' ' and a unique R_E_C_N_O_. Given CHAR values are space-padded like Protheus pads
them, unless wrapped in ``Raw`` (stored exactly as given, e.g. an empty string).

Most tests run on SQLite and on PostgreSQL (the latter marked ``postgres``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Float, Integer, MetaData, String, Table, create_engine, inspect, select

from cobranca import source as source_module
from cobranca.config import Layout, Selection, Source
from cobranca.models import CustomerTitles, Disposition
from cobranca.plan import SKIP_BELOW_MINIMUM, plan_letter
from cobranca.protheus import sa1_table, se1_table, to_money, to_rate
from cobranca.source import ProtheusSource, _money_field, _rate_field
from conftest import AS_OF

Row = dict[str, Any]
MakeDb = Callable[..., str]


# --- building the tables --------------------------------------------------------------------


class Raw(str):
    """A CHAR value stored exactly as given (not padded to the column's width)."""

    __slots__ = ()


def _blank(column: Any) -> Any:
    if isinstance(column.type, String):
        return " " * column.type.length
    if isinstance(column.type, Float):
        return 0.0
    assert isinstance(column.type, Integer), column
    return 0


def _stored(column: Any, value: Any) -> Any:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(column.type, String):
        assert len(value) <= column.type.length, (column.key, value)
        return value.ljust(column.type.length)
    return value


def _full_rows(table: Table, rows: Sequence[Row]) -> list[Row]:
    recnos = count(1)
    full = []
    for row in rows:
        unknown = set(row) - set(table.c.keys())
        assert not unknown, f"not a column of {table.name}: {unknown}"
        record = {column.key: _blank(column) for column in table.columns}
        record["R_E_C_N_O_"] = next(recnos)
        record.update({key: _stored(table.c[key], value) for key, value in row.items()})
        full.append(record)
    return full


def write_tables(url: str, se1: Sequence[Row] = (), sa1: Sequence[Row] = ()) -> str:
    """Create SE1010/SA1010 at ``url`` holding exactly these rows (blanks elsewhere)."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        tables = ((se1_table(metadata, "01"), se1), (sa1_table(metadata, "01"), sa1))
        metadata.create_all(engine)
        with engine.begin() as connection:
            for table, rows in tables:
                if rows:
                    connection.execute(table.insert(), _full_rows(table, rows))
    finally:
        engine.dispose()
    return url


def ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


def due(days_from_due: int, as_of: date = AS_OF) -> str:
    """The E1_VENCREA that is ``days_from_due`` days before ``as_of`` (negative: after)."""
    return ymd(as_of - timedelta(days=days_from_due))


def tit(**fields: Any) -> Row:
    """An open NF of customer 000001/01, branch 01, 5 days past its real due date."""
    row: Row = {
        "E1_FILIAL": "01",
        "E1_PREFIXO": "NF",
        "E1_NUM": "000000001",
        "E1_TIPO": "NF",
        "E1_CLIENTE": "000001",
        "E1_LOJA": "01",
        "E1_EMISSAO": due(60),
        "E1_VENCTO": due(5),
        "E1_VENCREA": due(5),
        "E1_VALOR": 100.0,
        "E1_SALDO": 100.0,
        "E1_SITUACA": "0",
    }
    row.update(fields)
    return row


def cli(**fields: Any) -> Row:
    """Customer 000001/01 in a shared SA1 (blank A1_FILIAL), active, one e-mail."""
    row: Row = {
        "A1_COD": "000001",
        "A1_LOJA": "01",
        "A1_NOME": "Cliente Um Ltda",
        "A1_NREDUZ": "Um",
        "A1_PESSOA": "J",
        "A1_CGC": "11222333000181",
        "A1_EMAIL": "um@cliente.com.br",
        "A1_END": "Rua Principal, 1",
        "A1_BAIRRO": "Centro",
        "A1_MUN": "Campinas",
        "A1_EST": "SP",
        "A1_CEP": "13010000",
        "A1_MSBLQL": "2",
    }
    row.update(fields)
    return row


def sel(**fields: Any) -> Selection:
    data: dict[str, Any] = {"days": {"min": 1, "max": 15}}
    data.update(fields)
    return Selection.model_validate(data)


def read(
    url: str,
    selection: Selection | None = None,
    as_of: date = AS_OF,
    customers: Sequence[str] = (),
    **source: Any,
) -> list[CustomerTitles]:
    source_ = ProtheusSource(Source.model_validate({"url": url, "company": "01", **source}))
    try:
        return list(source_.customers_titles(selection or sel(), as_of, customers))
    finally:
        source_.close()


def by_key(groups: Sequence[CustomerTitles]) -> dict[str, CustomerTitles]:
    index = {g.customer.key: g for g in groups}
    assert len(index) == len(groups), "a customer was yielded twice"
    return index


def numbers(groups: Sequence[CustomerTitles]) -> list[str]:
    return [t.number for g in groups for t in g.titles]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeDb]:
    """make_db(se1=[...], sa1=[...]) → URL of a fresh database holding those rows."""
    files = count(1)

    if request.param == "sqlite":

        def new_url() -> str:
            return f"sqlite:///{tmp_path / f'protheus{next(files)}.db'}"

    else:
        new_url = request.getfixturevalue("postgres_url")

    def make(se1: Sequence[Row] = (), sa1: Sequence[Row] = ()) -> str:
        return write_tables(new_url(), se1, sa1)

    yield make


# --- the helper itself ----------------------------------------------------------------------


def test_helper_fills_protheus_blanks_and_pads(tmp_path: Path) -> None:
    url = write_tables(
        f"sqlite:///{tmp_path / 'p.db'}",
        se1=[tit(E1_PREFIXO="1"), tit(E1_NUM="2", E1_EMISSAO=Raw(""))],
    )
    engine = create_engine(url)
    metadata = MetaData()
    se1 = se1_table(metadata, "01")
    with engine.connect() as connection:
        rows = [r._mapping for r in connection.execute(select(se1).order_by(se1.c.R_E_C_N_O_))]
        names = {c["name"] for c in inspect(connection).get_columns("se1010")}
    engine.dispose()
    assert "e1_saldo" in names and "E1_SALDO" not in names  # lower case in SQL
    first, second = rows
    assert first[se1.c.E1_PREFIXO] == "1  "
    assert first[se1.c.E1_PARCELA] == "  "
    assert first[se1.c.E1_BAIXA] == " " * 8
    assert first[se1.c.E1_HIST] == " " * 40
    assert first[se1.c.E1_JUROS] == 0 and first[se1.c.E1_MOEDA] == 0
    assert first[se1.c.D_E_L_E_T_] == " "
    assert second[se1.c.E1_EMISSAO] == ""
    assert [r[se1.c.R_E_C_N_O_] for r in rows] == [1, 2]


# --- deleted rows ---------------------------------------------------------------------------


def test_deleted_se1_rows_are_never_read(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="1"),
            tit(E1_NUM="2", D_E_L_E_T_="*"),
            tit(E1_CLIENTE="000002", E1_NUM="3", D_E_L_E_T_="*"),
        ],
        sa1=[cli(), cli(A1_COD="000002")],
    )
    groups = read(url)
    assert [g.customer.key for g in groups] == ["000001/01"]
    assert numbers(groups) == ["1"]


def test_deleted_sa1_row_produces_no_customer(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1"), tit(E1_CLIENTE="000002", E1_NUM="2")],
        sa1=[cli(), cli(A1_COD="000002", D_E_L_E_T_="*")],
    )
    groups = read(url)
    assert [g.customer.key for g in groups] == ["000001/01"]
    assert numbers(groups) == ["1"]


def test_deleted_old_sa1_version_beside_live_one_does_not_duplicate(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1"), tit(E1_NUM="2", E1_VENCREA=due(3))],
        sa1=[
            cli(A1_NOME="Nome Antigo", A1_EMAIL="antigo@cliente.com.br", D_E_L_E_T_="*"),
            cli(A1_NOME="Nome Atual"),
        ],
    )
    groups = read(url)
    assert len(groups) == 1
    (group,) = groups
    assert group.customer.name == "Nome Atual"
    assert group.customer.raw_emails == "um@cliente.com.br"
    assert [t.number for t in group.titles] == ["1", "2"]


# --- types and abatements -------------------------------------------------------------------


NEVER_COLLECTED = ("RA", "PR", "NCC", "TX", "NDF", "PA", "TXA")


def test_never_collected_types_are_excluded(make_db: MakeDb) -> None:
    rows = [tit(E1_NUM="1", E1_TIPO="NF")]
    rows += [tit(E1_NUM=str(i), E1_TIPO=kind) for i, kind in enumerate(NEVER_COLLECTED, 2)]
    url = make_db(se1=rows, sa1=[cli()])
    groups = read(url)
    assert [t.type for t in groups[0].titles] == ["NF"]


def test_never_collected_types_stay_out_even_when_included_by_the_layout(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1", E1_TIPO="RA"), tit(E1_NUM="2", E1_TIPO="NF")],
        sa1=[cli()],
    )
    groups = read(url, sel(types={"include": ["RA", "NF"]}))
    assert [t.type for g in groups for t in g.titles] == ["NF"]


def test_abatements_are_never_titles_and_reduce_the_main_one(make_db: MakeDb) -> None:
    key = {"E1_PREFIXO": "NF", "E1_NUM": "000000100", "E1_PARCELA": "A"}
    url = make_db(
        se1=[
            tit(**key, E1_VALOR=1000.0, E1_SALDO=1000.0),
            tit(**key, E1_TIPO="AB-", E1_SALDO=50.0, E1_VALOR=50.0),
            tit(**key, E1_TIPO="IR-", E1_SALDO=15.0, E1_VALOR=15.0),
            tit(**key, E1_TIPO="PI-", E1_SALDO=6.5, E1_VALOR=6.5),
        ],
        sa1=[cli()],
    )
    groups = read(url)
    (group,) = groups
    (title,) = group.titles
    assert title.type == "NF"
    assert title.balance == Decimal("1000.00")
    assert title.abatements == Decimal("71.50")
    assert title.net_balance == Decimal("928.50")


def test_abatement_alone_in_the_window_is_never_yielded(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_TIPO="AB-", E1_SALDO=10.0), tit(E1_NUM="2", E1_TIPO="FB-", E1_SALDO=3.0)],
        sa1=[cli()],
    )
    assert read(url) == []


def test_abatement_of_another_installment_branch_or_customer_is_not_subtracted(
    make_db: MakeDb,
) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="7", E1_PARCELA="A", E1_SALDO=100.0),
            tit(E1_NUM="7", E1_PARCELA="B", E1_SALDO=100.0, E1_VENCREA=due(4)),
            tit(E1_NUM="7", E1_PARCELA="B", E1_TIPO="AB-", E1_SALDO=30.0),
            tit(E1_NUM="7", E1_PARCELA="A", E1_TIPO="AB-", E1_SALDO=1.0, E1_FILIAL="02"),
            tit(E1_NUM="7", E1_PARCELA="A", E1_TIPO="AB-", E1_SALDO=2.0, E1_LOJA="02"),
        ],
        sa1=[cli()],
    )
    (group,) = read(url)
    nets = {t.installment: (t.abatements, t.net_balance) for t in group.titles}
    assert nets == {
        "A": (Decimal("0.00"), Decimal("100.00")),
        "B": (Decimal("30.00"), Decimal("70.00")),
    }


def test_deleted_or_settled_abatement_is_not_subtracted(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="9", E1_SALDO=200.0),
            tit(E1_NUM="9", E1_TIPO="AB-", E1_SALDO=40.0, D_E_L_E_T_="*"),
            tit(E1_NUM="9", E1_TIPO="IR-", E1_SALDO=0.0, E1_VALOR=12.0),
            tit(E1_NUM="9", E1_TIPO="CF-", E1_SALDO=5.0),
        ],
        sa1=[cli()],
    )
    ((title,),) = [g.titles for g in read(url)]
    assert title.abatements == Decimal("5.00")
    assert title.net_balance == Decimal("195.00")


# --- padding --------------------------------------------------------------------------------


def test_padded_values_come_back_trimmed(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_CLIENTE="C7", E1_LOJA="1", E1_PREFIXO="1", E1_NUM="123", E1_TIPO="DP")],
        sa1=[
            cli(
                A1_COD="C7",
                A1_LOJA="1",
                A1_NOME="Fulano",
                A1_NREDUZ="Ful",
                A1_EMAIL="fulano@cliente.com.br",
                A1_END="Rua A",
                A1_MUN="Sorocaba",
            )
        ],
    )
    (group,) = read(url, sel(customers={"include": ["C7/1"]}))
    customer = group.customer
    assert (customer.code, customer.store, customer.key) == ("C7", "1", "C7/1")
    assert (customer.name, customer.short_name) == ("Fulano", "Ful")
    assert customer.raw_emails == "fulano@cliente.com.br"
    assert customer.tax_id == "11222333000181"
    assert customer.address.street == "Rua A" and customer.address.city == "Sorocaba"
    (title,) = group.titles
    assert (title.prefix, title.number, title.installment, title.type) == ("1", "123", "", "DP")
    assert (title.customer_code, title.customer_store, title.branch) == ("C7", "1", "01")
    assert title.situation == "0"
    assert title.key == "01|1|123||DP|C7|1"


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" " * 8, Raw("")], ids=["spaces", "empty"])
def test_blank_issue_date_is_none(make_db: MakeDb, blank: str) -> None:
    url = make_db(se1=[tit(E1_EMISSAO=blank)], sa1=[cli()])
    ((title,),) = [g.titles for g in read(url)]
    assert title.issue_date is None
    assert title.real_due_date == AS_OF - timedelta(days=5)


@pytest.mark.parametrize("blank", [" " * 8, Raw("")], ids=["spaces", "empty"])
@pytest.mark.parametrize(
    "window", [{"min": 1, "max": 15}, {"min": None, "max": None}, {"min": 1}], ids=str
)
def test_blank_real_due_date_is_never_selected_but_reported(
    make_db: MakeDb, blank: str, window: dict[str, Any]
) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1"), tit(E1_NUM="2", E1_VENCREA=blank, E1_VENCTO=blank)],
        sa1=[cli()],
    )
    groups = read(url, sel(days=window))
    assert numbers(groups) == ["1"]
    ((key, reason),) = groups[0].rejected
    assert key.split("|")[2] == "2" and "E1_VENCREA" in reason and "blank" in reason


def test_garbage_issue_date_rejects_only_that_titulo(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="1", E1_VENCREA=due(9)),
            tit(E1_NUM="2", E1_EMISSAO="2025133 ", E1_PARCELA="B"),
            tit(E1_NUM="3", E1_VENCREA=due(2)),
            tit(E1_CLIENTE="000002", E1_NUM="4"),
        ],
        sa1=[cli(), cli(A1_COD="000002")],
    )
    groups = by_key(read(url))
    first = groups["000001/01"]
    assert [t.number for t in first.titles] == ["1", "3"]
    ((key, reason),) = first.rejected
    assert key == "01|NF|2|B|NF|000001|01"
    assert "2025133" in reason and "YYYYMMDD" in reason
    assert [t.number for t in groups["000002/01"].titles] == ["4"]
    assert groups["000002/01"].rejected == ()


def test_rejection_reason_names_the_bad_field(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1", E1_EMISSAO="2025133 "), tit(E1_NUM="2", E1_VENCTO="20261399")],
        sa1=[cli()],
    )
    (group,) = read(url)
    reasons = dict(group.rejected)
    assert "E1_EMISSAO" in reasons["01|NF|1||NF|000001|01"]
    assert "E1_VENCTO" in reasons["01|NF|2||NF|000001|01"]


# --- days -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "offsets", "selected"),
    [
        ({"min": 1, "max": 15}, [-1, 0, 1, 2, 14, 15, 16], [1, 2, 14, 15]),
        ({"min": -3, "max": -3}, [-4, -3, -2, 0], [-3]),
        ({"min": -5, "max": 5}, [-6, -5, 0, 5, 6], [-5, 0, 5]),
        ({"min": 1}, [-2, 0, 1, 400, 5000], [1, 400, 5000]),
        ({"min": 30, "max": None}, [29, 30, 31, 3650], [30, 31, 3650]),
        ({"max": 0}, [-30, -1, 0, 1], [-30, -1, 0]),
    ],
    ids=str,
)
def test_selection_window_is_inclusive_at_both_ends(
    make_db: MakeDb, window: dict[str, Any], offsets: list[int], selected: list[int]
) -> None:
    rows = [tit(E1_NUM=str(i), E1_VENCTO=due(d), E1_VENCREA=due(d)) for i, d in enumerate(offsets)]
    url = make_db(se1=rows, sa1=[cli()])
    groups = read(url, sel(days=window))
    got = [t.days_from_due for g in groups for t in g.titles]
    assert got == sorted(selected, reverse=True)  # ordered by real due date
    for title in groups[0].titles:
        assert title.real_due_date == AS_OF - timedelta(days=title.days_from_due)


@pytest.mark.parametrize(
    ("as_of", "days_late", "days_from_due"),
    [
        (date(2025, 3, 20), 17, 15),  # the worked example in protheus.md
        (date(2025, 3, 5), 0, 0),  # on the real due date: not late
        (date(2025, 3, 4), 0, -1),  # between due and real due date
        (date(2025, 3, 6), 3, 1),  # day after real due date: counted from E1_VENCTO
    ],
)
def test_days_late_as_protheus_counts(
    make_db: MakeDb, as_of: date, days_late: int, days_from_due: int
) -> None:
    url = make_db(
        se1=[tit(E1_EMISSAO="20250201", E1_VENCTO="20250303", E1_VENCREA="20250305")],
        sa1=[cli()],
    )
    ((title,),) = [g.titles for g in read(url, sel(days={"min": -30}), as_of=as_of)]
    assert title.due_date == date(2025, 3, 3)
    assert title.real_due_date == date(2025, 3, 5)
    assert title.issue_date == date(2025, 2, 1)
    assert title.days_late == days_late
    assert title.days_from_due == days_from_due
    assert title.overdue is (days_from_due > 0)


def test_very_wide_window_does_not_crash(make_db: MakeDb) -> None:
    url = make_db(se1=[tit(E1_NUM="1", E1_VENCREA=due(1000))], sa1=[cli()])
    try:
        selection = sel(days={"min": 1, "max": 1_000_000})
    except ValidationError:
        return  # refusing such a window in the config is a fix too
    groups = read(url, selection)
    assert numbers(groups) == ["1"]


# --- money ----------------------------------------------------------------------------------


def test_float_money_comes_back_as_exact_decimal(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="1", E1_VALOR=33.33, E1_SALDO=33.33),
            tit(E1_NUM="2", E1_VALOR=1.0, E1_SALDO=0.1 + 0.2, E1_VENCREA=due(4)),
            tit(E1_NUM="3", E1_VALOR=150.0, E1_SALDO=150.0 - 16.67, E1_VENCREA=due(3)),
            tit(E1_NUM="3", E1_TIPO="AB-", E1_SALDO=0.1),
            tit(E1_NUM="3", E1_TIPO="IR-", E1_SALDO=0.2),
        ],
        sa1=[cli()],
    )
    ((one, two, three),) = [g.titles for g in read(url)]
    for title in (one, two, three):
        for amount in (title.value, title.balance, title.abatements, title.net_balance):
            assert type(amount) is Decimal
            assert amount == amount.quantize(Decimal("0.01"))
    assert str(one.balance) == "33.33" and str(one.value) == "33.33"
    assert two.balance == Decimal("0.30")
    assert three.balance == Decimal("133.33")
    assert three.abatements == Decimal("0.30")
    assert three.net_balance == Decimal("133.03")


# --- filters --------------------------------------------------------------------------------


def test_branches_filter(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_NUM=str(i), E1_FILIAL=b) for i, b in enumerate(["01", "02", "03"])],
        sa1=[cli()],
    )
    assert {t.branch for g in read(url, sel(branches=["01", "03"])) for t in g.titles} == {
        "01",
        "03",
    }
    assert {t.branch for g in read(url) for t in g.titles} == {"01", "02", "03"}


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ({}, {"NF", "DP", "BOL", "CH"}),
        ({"include": ["DP", "BOL"]}, {"DP", "BOL"}),
        ({"exclude": ["BOL"]}, {"NF", "DP", "CH"}),
        ({"include": ["NF", "DP"], "exclude": ["DP"]}, {"NF"}),
    ],
    ids=str,
)
def test_types_filter(make_db: MakeDb, types: dict[str, Any], expected: set[str]) -> None:
    url = make_db(
        se1=[tit(E1_NUM=str(i), E1_TIPO=k) for i, k in enumerate(["NF", "DP", "BOL", "CH"])],
        sa1=[cli()],
    )
    assert {t.type for g in read(url, sel(types=types)) for t in g.titles} == expected


@pytest.mark.parametrize(
    ("situations", "expected"),
    [
        (None, {"0", "1"}),
        (["0", "1", "2"], {"0", "1", "2"}),
        (["5"], {"5"}),
    ],
    ids=str,
)
def test_situations_filter(
    make_db: MakeDb, situations: list[str] | None, expected: set[str]
) -> None:
    codes = ["0", "1", "2", "5", "6", "F", "G", "H"]
    url = make_db(se1=[tit(E1_NUM=str(i), E1_SITUACA=s) for i, s in enumerate(codes)], sa1=[cli()])
    selection = sel() if situations is None else sel(situations=situations)
    assert {t.situation for g in read(url, selection) for t in g.titles} == expected


CUSTOMER_KEYS = ["000001/01", "000001/02", "000002/01", "000003/01"]


@pytest.fixture
def four_customers(make_db: MakeDb) -> str:
    se1, sa1 = [], []
    for i, key in enumerate(CUSTOMER_KEYS):
        code, store = key.split("/")
        se1.append(tit(E1_NUM=str(i), E1_CLIENTE=code, E1_LOJA=store))
        sa1.append(cli(A1_COD=code, A1_LOJA=store))
    return make_db(se1=se1, sa1=sa1)


@pytest.mark.parametrize(
    ("customers", "expected"),
    [
        ({}, CUSTOMER_KEYS),
        ({"include": ["000001"]}, ["000001/01", "000001/02"]),
        ({"include": ["000001/02"]}, ["000001/02"]),
        ({"include": ["000001/02", "000003"]}, ["000001/02", "000003/01"]),
        ({"exclude": ["000001"]}, ["000002/01", "000003/01"]),
        ({"exclude": ["000001/01", "000003"]}, ["000001/02", "000002/01"]),
        ({"include": ["000001"], "exclude": ["000001/02"]}, ["000001/01"]),
        ({"include": ["999999"]}, []),
    ],
    ids=str,
)
def test_customers_filter(
    four_customers: str, customers: dict[str, Any], expected: list[str]
) -> None:
    groups = read(four_customers, sel(customers=customers))
    assert [g.customer.key for g in groups] == expected


def test_customers_argument_narrows_on_top_of_the_selection(four_customers: str) -> None:
    assert [g.customer.key for g in read(four_customers, customers=["000001/02"])] == ["000001/02"]
    assert [g.customer.key for g in read(four_customers, customers=["000002", "000003"])] == [
        "000002/01",
        "000003/01",
    ]
    narrowed = read(four_customers, sel(customers={"include": ["000001"]}), customers=["000002"])
    assert narrowed == []


@pytest.mark.parametrize(
    "hostile",
    [
        "000001' OR '1'='1",
        "000001' OR 1=1 --",
        "x'); DROP TABLE se1010; --",
        "000001/01' OR '1'='1",
    ],
)
def test_customer_filter_values_are_bound_not_spliced(make_db: MakeDb, hostile: str) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1"), tit(E1_NUM="2", E1_CLIENTE="000002")],
        sa1=[cli(), cli(A1_COD="000002")],
    )
    assert read(url, customers=[hostile]) == []
    no_spaces = hostile.replace(" ", "")
    assert read(url, sel(customers={"include": [no_spaces]})) == []
    assert [g.customer.key for g in read(url, sel(customers={"exclude": [no_spaces]}))] == [
        "000001/01",
        "000002/01",
    ]
    source = ProtheusSource(Source.model_validate({"url": url}))
    try:
        sql = str(source.statement(sel(), AS_OF, [hostile]).compile())
    finally:
        source.close()
    assert "OR '1'='1" not in sql and "DROP" not in sql
    assert numbers(read(url)) == ["1", "2"]  # table still there


def test_skip_blocked(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1"), tit(E1_NUM="2", E1_CLIENTE="000002")],
        sa1=[cli(A1_MSBLQL="1"), cli(A1_COD="000002", A1_MSBLQL=" ")],
    )
    assert [g.customer.key for g in read(url)] == ["000002/01"]
    groups = by_key(read(url, sel(skip_blocked=False)))
    assert groups["000001/01"].customer.blocked is True
    assert groups["000002/01"].customer.blocked is False


LAYOUT = {
    "name": "primeiro-aviso",
    "schedule": "0 9 * * mon-fri",
    "template": "primeiro-aviso",
    "subject": "Aviso",
    "cadence_days": 15,
}


def test_min_balance_in_sql_on_gross_and_in_plan_on_net(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="1", E1_SALDO=49.99),  # gross below the minimum: not read
            tit(E1_NUM="2", E1_SALDO=100.0, E1_VENCREA=due(4)),  # net 40 after abatement
            tit(E1_NUM="2", E1_TIPO="AB-", E1_SALDO=60.0),
            tit(E1_NUM="3", E1_SALDO=80.0, E1_VENCREA=due(3)),  # net 80
            tit(E1_CLIENTE="000002", E1_NUM="4", E1_SALDO=55.0),  # net 5 only
            tit(E1_CLIENTE="000002", E1_NUM="4", E1_TIPO="IR-", E1_SALDO=50.0),
        ],
        sa1=[cli(), cli(A1_COD="000002")],
    )
    selection = {"days": {"min": 1, "max": 15}, "min_balance": "50.00"}
    groups = by_key(read(url, Selection.model_validate(selection)))
    assert [t.number for t in groups["000001/01"].titles] == ["2", "3"]
    layout = Layout.model_validate({**LAYOUT, "selection": selection})

    one = plan_letter(groups["000001/01"], layout, AS_OF, None)
    assert one.disposition is Disposition.SEND
    assert [t.number for t in one.titles] == ["3"]
    assert one.total == Decimal("80.00")

    two = plan_letter(groups["000002/01"], layout, AS_OF, None)
    assert two.disposition is Disposition.SKIP
    assert two.reason == SKIP_BELOW_MINIMUM


def test_min_balance_prefilter_keeps_a_float_saldo_worth_the_minimum(make_db: MakeDb) -> None:
    url = make_db(se1=[tit(E1_NUM="1", E1_SALDO=150.0 - 16.67)], sa1=[cli()])
    selection = Selection.model_validate({"days": {"min": 1, "max": 15}, "min_balance": "133.33"})
    groups = read(url, selection)
    assert numbers(groups) == ["1"]
    assert groups[0].titles[0].balance == Decimal("133.33")


# --- customer and address -------------------------------------------------------------------


BILLING = {
    "A1_ENDCOB": "Caixa Postal 99",
    "A1_BAIRROC": "Distrito Industrial",
    "A1_MUNC": "Jundiai",
    "A1_ESTC": "SP",
    "A1_CEPC": "13200000",
}


def test_billing_address_when_all_five_fields_are_filled(make_db: MakeDb) -> None:
    url = make_db(se1=[tit()], sa1=[cli(**BILLING)])
    (group,) = read(url)
    address = group.customer.address
    assert (address.street, address.district, address.city, address.state, address.zip_code) == (
        "Caixa Postal 99",
        "Distrito Industrial",
        "Jundiai",
        "SP",
        "13200000",
    )


@pytest.mark.parametrize("missing", sorted(BILLING))
def test_main_address_when_a_billing_field_is_blank(make_db: MakeDb, missing: str) -> None:
    url = make_db(se1=[tit()], sa1=[cli(**{**BILLING, missing: ""})])
    (group,) = read(url)
    address = group.customer.address
    assert (address.street, address.district, address.city, address.state, address.zip_code) == (
        "Rua Principal, 1",
        "Centro",
        "Campinas",
        "SP",
        "13010000",
    )


def test_one_group_per_code_and_store_with_titles_by_real_due_date(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_CLIENTE="000002", E1_NUM="21", E1_VENCREA=due(2)),
            tit(E1_LOJA="02", E1_NUM="121", E1_VENCREA=due(8)),
            tit(E1_NUM="11", E1_VENCREA=due(3)),
            tit(E1_NUM="12", E1_VENCREA=due(12)),
            tit(E1_LOJA="02", E1_NUM="122", E1_VENCREA=due(1)),
            tit(E1_NUM="13", E1_VENCREA=due(7), E1_FILIAL="02"),
            tit(E1_CLIENTE="000002", E1_NUM="22", E1_VENCREA=due(14)),
        ],
        sa1=[
            cli(A1_COD="000002", A1_NOME="Dois"),
            cli(A1_LOJA="02", A1_NOME="Um loja 2"),
            cli(A1_NOME="Um loja 1"),
        ],
    )
    groups = read(url)
    assert [(g.customer.key, g.customer.name, [t.number for t in g.titles]) for g in groups] == [
        ("000001/01", "Um loja 1", ["12", "13", "11"]),
        ("000001/02", "Um loja 2", ["121", "122"]),
        ("000002/01", "Dois", ["22", "21"]),
    ]
    for group in groups:
        for title in group.titles:
            assert (title.customer_code, title.customer_store) == (
                group.customer.code,
                group.customer.store,
            )


def test_exclusive_customers_are_joined_on_the_branch(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_FILIAL="01", E1_NUM="1"),
            tit(E1_FILIAL="01", E1_NUM="2", E1_CLIENTE="000002"),
        ],
        sa1=[
            cli(A1_FILIAL="02", A1_NOME="Um da filial 02"),
            cli(A1_FILIAL="01", A1_NOME="Um da filial 01"),
            cli(A1_FILIAL="02", A1_COD="000002", A1_NOME="Dois da filial 02"),
        ],
    )
    groups = read(url, customers_shared=False)
    assert [(g.customer.name, [t.number for t in g.titles]) for g in groups] == [
        ("Um da filial 01", ["1"]),
    ]


def test_shared_customers_are_joined_whatever_the_branch(make_db: MakeDb) -> None:
    url = make_db(
        se1=[tit(E1_FILIAL="01", E1_NUM="1"), tit(E1_FILIAL="02", E1_NUM="2")],
        sa1=[cli(A1_FILIAL="  ")],
    )
    (group,) = read(url)
    assert [t.branch for t in group.titles] == ["01", "02"]


def test_no_rows_yields_nothing(make_db: MakeDb) -> None:
    assert read(make_db()) == []


# --- streaming ------------------------------------------------------------------------------


class _CountingCursor(sqlite3.Cursor):
    rows = 0

    def fetchone(self) -> Any:
        row = super().fetchone()
        _CountingCursor.rows += row is not None
        return row

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        rows = super().fetchmany(*args, **kwargs)
        _CountingCursor.rows += len(rows)
        return rows

    def fetchall(self) -> list[Any]:
        rows = super().fetchall()
        _CountingCursor.rows += len(rows)
        return rows


class _CountingConnection(sqlite3.Connection):
    def cursor(self, factory: Any = _CountingCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)


def test_groups_stream_before_the_result_is_consumed(tmp_path: Path) -> None:
    customers = 60
    se1, sa1 = [], []
    for i in range(customers):
        code = f"{i:06d}"
        sa1.append(cli(A1_COD=code, A1_NOME=f"Cliente {i}"))
        se1.append(tit(E1_CLIENTE=code, E1_NUM=f"{i}1", E1_VENCREA=due(2)))
        se1.append(tit(E1_CLIENTE=code, E1_NUM=f"{i}2", E1_VENCREA=due(9)))
    path = tmp_path / "big.db"
    url = write_tables(f"sqlite:///{path}", se1, sa1)
    engine = create_engine(url, connect_args={"factory": _CountingConnection})
    config = Source.model_validate({"url": url, "fetch_size": 10})
    source = ProtheusSource(config, engine=engine)
    try:
        with engine.connect():  # the dialect's first-connect queries are not ours to count
            pass
        _CountingCursor.rows = 0
        stream = source.customers_titles(sel(), AS_OF)
        first = next(stream)
        fetched_for_first = _CountingCursor.rows
        assert first.customer.key == "000000/01"
        assert [t.number for t in first.titles] == ["02", "01"]
        assert 0 < fetched_for_first <= 2 * config.fetch_size < len(se1)
        rest = list(stream)
    finally:
        source.close()
    assert _CountingCursor.rows == len(se1)
    groups = [first, *rest]
    assert [g.customer.key for g in groups] == [f"{i:06d}/01" for i in range(customers)]
    for i, group in enumerate(groups):
        assert group.customer.name == f"Cliente {i}"
        assert [t.number for t in group.titles] == [f"{i}2", f"{i}1"]


# --- everything at once, on both databases ---------------------------------------------------


def test_combined_deletion_types_abatements_padding_dates(make_db: MakeDb) -> None:
    url = make_db(
        se1=[
            tit(E1_NUM="1", E1_PREFIXO="A", E1_SALDO=500.0, E1_EMISSAO=Raw("")),
            tit(E1_NUM="1", E1_PREFIXO="A", E1_TIPO="AB-", E1_SALDO=20.0),
            tit(E1_NUM="1", E1_PREFIXO="A", E1_TIPO="IR-", E1_SALDO=7.5, D_E_L_E_T_="*"),
            tit(E1_NUM="2", E1_SALDO=33.33, E1_VENCREA=due(2), E1_VENCTO=due(4)),
            tit(E1_NUM="3", D_E_L_E_T_="*"),
            tit(E1_NUM="4", E1_TIPO="NCC"),
            tit(E1_NUM="5", E1_TIPO="RA"),
            tit(E1_NUM="6", E1_VENCREA=" " * 8),
            tit(E1_NUM="7", E1_EMISSAO="2025133 "),
            tit(E1_NUM="8", E1_SITUACA="6"),
            tit(E1_NUM="9", E1_CLIENTE="X9", E1_LOJA="1"),
            tit(E1_NUM="10", E1_CLIENTE="000003"),
        ],
        sa1=[
            cli(A1_NOME="Velho", D_E_L_E_T_="*"),
            cli(A1_EMAIL="a@x.com.br; b@x.com.br"),
            cli(A1_COD="X9", A1_LOJA="1", A1_NOME="Nove"),
            cli(A1_COD="000003", D_E_L_E_T_="*"),
        ],
    )
    groups = read(url)
    assert [g.customer.key for g in groups] == ["000001/01", "X9/1"]
    one = groups[0]
    assert one.customer.name == "Cliente Um Ltda"
    assert one.customer.raw_emails == "a@x.com.br; b@x.com.br"
    first, second = one.titles
    assert (first.prefix, first.number, first.type) == ("A", "1", "NF")
    assert first.issue_date is None
    assert (first.balance, first.abatements, first.net_balance) == (
        Decimal("500.00"),
        Decimal("20.00"),
        Decimal("480.00"),
    )
    assert (second.number, second.balance, second.days_from_due, second.days_late) == (
        "2",
        Decimal("33.33"),
        2,
        4,
    )
    assert sorted(key for key, _ in one.rejected) == [
        "01|NF|6||NF|000001|01",  # blank real due date: reported, not sent
        "01|NF|7||NF|000001|01",  # garbage issue date
    ]
    assert groups[1].customer.name == "Nove"
    assert [t.number for t in groups[1].titles] == ["9"]


def test_shared_customers_with_a_branch_in_sa1_are_named_not_lost_silently(
    make_db: MakeDb,
) -> None:
    url = make_db(
        se1=[tit(E1_NUM="1"), tit(E1_NUM="2", E1_CLIENTE="000002")],
        sa1=[cli(A1_FILIAL="  "), cli(A1_FILIAL="02", A1_COD="000002")],
    )

    def problem(url: str, **settings: Any) -> str | None:
        source = ProtheusSource(Source.model_validate({"url": url, "company": "01", **settings}))
        try:
            return source.sharing_problem()
        finally:
            source.close()

    assert [g.customer.code for g in read(url)] == ["000001"]  # 000002 is not read...
    found = problem(url)
    assert found is not None and "'02'" in found  # ...and that is said, with what to change
    assert "source.customers_shared: false" in found
    assert problem(url, customers_shared=False) is None
    blank = make_db(se1=[tit(E1_NUM="1")], sa1=[cli(A1_FILIAL="  ")])
    assert problem(blank) is None


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0.0, -0.0, 0, 33.33, 1.005, 0.125, -0.004]),
    st.decimals(places=4, allow_nan=False, allow_infinity=False),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(NUMBERS, min_size=1, max_size=6))
def test_remembered_amounts_are_the_general_conversion(values: list[Any]) -> None:
    """Each value read twice (the second time remembered) converts as protheus does, sign
    of zero included; anything that is no number names the field."""
    for value in values + values:
        for read, convert in ((_money_field, to_money), (_rate_field, to_rate)):
            try:
                expected = convert(value)
                finite = expected.is_finite()
            except ArithmeticError:
                finite = False
            if not finite:
                with pytest.raises(ValueError, match=r"^E1_X: not a number"):
                    read(value, "E1_X")
                continue
            got = read(value, "E1_X")
            assert (got, str(got)) == (expected, str(expected)), value


def test_remembered_amounts_stay_bounded_and_right_across_clearing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full cache is cleared, not grown (a 1M-título read meets some 35,000 distinct
    amounts), and what is read after a clearing still converts as protheus does, the sign
    of zero included."""
    monkeypatch.setattr(source_module, "_CACHE_LIMIT", 4)
    cache: dict[float, Decimal] = {}
    reader = source_module._field_reader(cache, source_module._ZERO_MONEY, to_money)
    values = [0.0, -0.0, 1.005, 33.33, 0.125, 7, 99.99, -0.0, 0.0, 1.005, 12.5, 0, 33.33]
    sizes = []
    for value in values * 3:
        got = reader(value, "E1_X")
        expected = to_money(value)
        assert (got, str(got)) == (expected, str(expected)), value
        sizes.append(len(cache))
    assert max(sizes) == 4  # full, then cleared: never more
    assert sizes.count(1) >= 3  # a clearing, then one new amount, more than once
