"""The demo database must look like Protheus and carry every trap the reader has to survive.

Check digits and the "collectible" rule are written out here independently of cobranca.demo,
so a bug in the generator cannot hide behind the same bug in its test.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, String, Table, create_engine, make_url, select, text
from sqlalchemy.engine import Engine

from cobranca.demo import HOSTILE_CODE, HOSTILE_NAME, DemoSummary, pad, write_demo_database
from cobranca.protheus import sa1_table, se1_table

AS_OF = date(2026, 12, 4)  # a Friday: as_of + 3 is a Monday
NEVER_COLLECTED = {"RA", "PR", "PA", "TX", "TXA", "NCC", "NDF"}
FRIENDLY_SITUATIONS = {"0", "1"}

Row = dict[str, Any]


# --- helpers ------------------------------------------------------------------------------------


def _write(tmp: Path, name: str = "demo.db", **kwargs: Any) -> tuple[str, DemoSummary]:
    url = f"sqlite:///{tmp / name}"
    kwargs.setdefault("as_of", AS_OF)
    return url, write_demo_database(url, **kwargs)


def _tables(company: str = "01", schema: str | None = None) -> tuple[Table, Table]:
    metadata = MetaData()
    return sa1_table(metadata, company, schema), se1_table(metadata, company, schema)


def _rows(engine: Engine, table: Table) -> list[Row]:
    with engine.connect() as conn:
        result = conn.execute(select(table).order_by(table.c.R_E_C_N_O_))
        return [{c.key: r._mapping[c] for c in table.columns} for r in result]


def _read(url: str, company: str = "01", schema: str | None = None) -> tuple[list[Row], list[Row]]:
    sa1, se1 = _tables(company, schema)
    engine = create_engine(url)
    try:
        return _rows(engine, sa1), _rows(engine, se1)
    finally:
        engine.dispose()


def _date(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def _live(rows: list[Row]) -> Iterator[Row]:
    return (r for r in rows if r["D_E_L_E_T_"] == " ")


def _is_abatement(kind: str) -> bool:
    return len(kind) == 3 and kind[2] == "-"


def _collectible(row: Row) -> bool:
    """Live, open, of a type that is collected (the rule from shared/protheus.md)."""
    kind = row["E1_TIPO"].strip()
    return (
        row["D_E_L_E_T_"] == " "
        and row["E1_SALDO"] > 0
        and kind not in NEVER_COLLECTED
        and not _is_abatement(row["E1_TIPO"])
    )


def _key(row: Row) -> tuple[str, ...]:
    """The título key without the type: what an abatement shares with its main título."""
    cols = ("E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA", "E1_CLIENTE", "E1_LOJA")
    return tuple(row[c] for c in cols)


def _cpf_valid(cpf: str) -> bool:
    if len(cpf) != 11 or not cpf.isdigit() or len(set(cpf)) == 1:
        return False
    for size in (9, 10):
        total = sum(int(d) * w for d, w in zip(cpf[:size], range(size + 1, 1, -1), strict=True))
        if (total * 10) % 11 % 10 != int(cpf[size]):
            return False
    return True


def _cnpj_valid(cnpj: str) -> bool:
    if len(cnpj) != 14 or not cnpj.isdigit() or len(set(cnpj)) == 1:
        return False
    weights1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    weights2 = [6, *weights1]
    for size, weights in ((12, weights1), (13, weights2)):
        rest = sum(int(d) * w for d, w in zip(cnpj[:size], weights, strict=True)) % 11
        if (0 if rest < 2 else 11 - rest) != int(cnpj[size]):
            return False
    return True


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Row], list[Row]]:
    """The default demo (40 customers, seed 7), written once for the read-only tests."""
    url, _ = _write(tmp_path_factory.mktemp("demo"))
    return _read(url)


# --- determinism and replacement ----------------------------------------------------------------


def test_same_arguments_write_identical_tables(tmp_path: Path) -> None:
    url_a, summary_a = _write(tmp_path, "a.db")
    url_b, summary_b = _write(tmp_path, "b.db")
    assert _read(url_a) == _read(url_b)
    assert summary_a.titles == summary_b.titles
    assert summary_a.customers == 40


def test_different_seed_writes_different_data(tmp_path: Path) -> None:
    url_a, _ = _write(tmp_path, "a.db", seed=7)
    url_b, _ = _write(tmp_path, "b.db", seed=8)
    sa1_a, se1_a = _read(url_a)
    sa1_b, se1_b = _read(url_b)
    assert [r["A1_NOME"] for r in sa1_a] != [r["A1_NOME"] for r in sa1_b]
    assert [r["E1_VALOR"] for r in se1_a] != [r["E1_VALOR"] for r in se1_b]


def test_dates_follow_as_of(tmp_path: Path) -> None:
    url_a, _ = _write(tmp_path, "a.db", as_of=AS_OF)
    url_b, _ = _write(tmp_path, "b.db", as_of=AS_OF + timedelta(days=28))
    (_, se1_a), (_, se1_b) = _read(url_a), _read(url_b)
    assert len(se1_a) == len(se1_b)
    shifted = [_date(r["E1_VENCTO"]) + timedelta(days=28) for r in se1_a]
    assert shifted == [_date(r["E1_VENCTO"]) for r in se1_b]


def test_running_twice_replaces_the_tables(tmp_path: Path) -> None:
    url, first = _write(tmp_path)
    _, second = _write(tmp_path)
    sa1, se1 = _read(url)
    assert len(se1) == first.titles == second.titles
    _, smaller = _write(tmp_path, customers=5)
    sa1_small, se1_small = _read(url)
    assert len(se1_small) == smaller.titles < len(se1)
    assert len(sa1_small) < len(sa1)
    assert {r["A1_COD"] for r in sa1_small} == {f"{i:06d}" for i in range(1, 6)}


def test_summary_reports_what_was_written(tmp_path: Path) -> None:
    url, summary = _write(tmp_path, customers=12)
    _, se1 = _read(url)
    assert summary == DemoSummary(customers=12, titles=len(se1), url=url)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0}, "customers"),
        ({"customers": 1_000_000}, "customers"),
        ({"company": "1"}, "company"),
        ({"company": "0;"}, "company"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _write(tmp_path, **kwargs)


def test_other_company_writes_its_own_tables(tmp_path: Path) -> None:
    url, summary = _write(tmp_path, company="99", customers=3)
    sa1, se1 = _read(url, company="99")
    assert len(se1) == summary.titles > 0
    assert len(sa1) >= 3
    engine = create_engine(url)
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("select name from sqlite_master"))}
    engine.dispose()
    assert {"sa1990", "se1990"} <= names
    assert "se1010" not in names


# --- Protheus storage conventions ---------------------------------------------------------------


def test_pad_pads_and_truncates() -> None:
    assert pad("NF", 3) == "NF "
    assert pad("", 8) == " " * 8
    assert pad("abcdef", 4) == "abcd"


def test_every_char_value_has_its_declared_width(demo: tuple[list[Row], list[Row]]) -> None:
    sa1_rows, se1_rows = demo
    sa1, se1 = _tables()
    empty_baixa = 0
    for table, rows in ((sa1, sa1_rows), (se1, se1_rows)):
        char_columns = [c for c in table.columns if isinstance(c.type, String)]
        assert char_columns
        for row in rows:
            for column in char_columns:
                value = row[column.key]
                if column.key == "E1_BAIXA" and value == "":
                    empty_baixa += 1  # the other blank-date representation, on purpose
                    continue
                assert isinstance(value, str)
                assert len(value) == column.type.length, (column.key, row["R_E_C_N_O_"])
    assert 1 <= empty_baixa <= 2


def test_no_nulls_and_recnos_are_unique_and_increasing(demo: tuple[list[Row], list[Row]]) -> None:
    for rows in demo:
        assert all(v is not None for row in rows for v in row.values())
        recnos = [r["R_E_C_N_O_"] for r in rows]
        assert recnos == list(range(1, len(rows) + 1))


def test_dates_are_yyyymmdd_or_blank(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    for row in se1:
        for col in ("E1_EMISSAO", "E1_VENCTO", "E1_VENCREA"):
            _date(row[col])  # raises if not a date
        if row["E1_BAIXA"].strip():
            assert _date(row["E1_BAIXA"]) <= AS_OF
        assert _date(row["E1_EMISSAO"]) < _date(row["E1_VENCTO"])


def test_real_due_date_skips_weekends_and_never_precedes_due(
    demo: tuple[list[Row], list[Row]],
) -> None:
    _, se1 = demo
    moved = 0
    for row in se1:
        due, real = _date(row["E1_VENCTO"]), _date(row["E1_VENCREA"])
        assert real.weekday() < 5
        assert real >= due
        if due.weekday() < 5:
            assert real == due
        else:
            assert real == due + timedelta(days=7 - due.weekday())
            moved += 1
    assert moved > 0


def test_money_is_float_with_cents(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    for row in se1:
        for col in ("E1_VALOR", "E1_SALDO", "E1_VALJUR", "E1_SDACRES", "E1_SDDECRE"):
            assert isinstance(row[col], float)
            assert round(row[col], 2) == row[col]
        assert 0 <= row["E1_SALDO"] <= row["E1_VALOR"] or row["D_E_L_E_T_"] == "*"
        assert row["E1_MOEDA"] == 1
        assert row["E1_PORCJUR"] in (0.0, 0.0333)
        assert row["E1_PORCJUR"] == 0.0 or row["E1_VALJUR"] == 0.0
    main = [r for r in _live(se1) if r["E1_TIPO"] in ("NF ", "DP ", "BOL")]
    assert all(150.0 <= r["E1_VALOR"] <= 25_000.0 for r in main)


# --- customers ----------------------------------------------------------------------------------


def test_tax_ids_have_valid_check_digits(demo: tuple[list[Row], list[Row]]) -> None:
    sa1, _ = demo
    kinds = Counter()
    for row in _live(sa1):
        tax_id = row["A1_CGC"].strip()
        kinds[row["A1_PESSOA"]] += 1
        if row["A1_PESSOA"] == "F":
            assert _cpf_valid(tax_id), tax_id
        else:
            assert row["A1_PESSOA"] == "J"
            assert _cnpj_valid(tax_id), tax_id
    assert kinds["F"] > 0
    assert kinds["J"] > kinds["F"]


def test_check_digit_validators_themselves() -> None:
    assert _cpf_valid("52998224725")
    assert not _cpf_valid("52998224724")
    assert _cnpj_valid("11222333000181")
    assert not _cnpj_valid("11222333000180")


def test_customers_and_stores(demo: tuple[list[Row], list[Row]]) -> None:
    sa1, _ = demo
    live = list(_live(sa1))
    stores = {(r["A1_COD"], r["A1_LOJA"]) for r in live}
    assert len(stores) == len(live)  # one live row per code/store
    assert {code for code, _ in stores} == {f"{i:06d}" for i in range(1, 41)}
    assert {code for code, store in stores if store == "02"} == {"000010", "000020", "000030",
                                                                 "000040"}  # fmt: skip
    assert all(r["A1_FILIAL"] == "  " for r in sa1)
    assert {r["A1_MSBLQL"] for r in live} == {"1", "2"}
    assert {r["A1_RISCO"] for r in live} <= set("ABCDE")
    assert all(r["A1_CEP"].isdigit() and len(r["A1_EST"].strip()) == 2 for r in live)


def test_emails_come_in_every_shape(demo: tuple[list[Row], list[Row]]) -> None:
    sa1, _ = demo
    emails = [r["A1_EMAIL"].strip() for r in _live(sa1)]
    assert sum(1 for e in emails if not e) >= 1
    assert sum(1 for e in emails if ";" in e or "," in e) >= 2
    assert any(e and ("@" not in e or "@@" in e or e.endswith("@")) for e in emails)
    assert sum(1 for e in emails if e.count("@") == 1 and " " not in e) > len(emails) / 2


def test_billing_addresses_complete_incomplete_and_absent(
    demo: tuple[list[Row], list[Row]],
) -> None:
    sa1, _ = demo
    billing = ("A1_ENDCOB", "A1_BAIRROC", "A1_MUNC", "A1_ESTC", "A1_CEPC")
    filled = Counter(sum(1 for c in billing if r[c].strip()) for r in _live(sa1))
    assert filled[5] > 0  # complete: the letter uses it
    assert filled[1] > 0  # only A1_ENDCOB: the letter must fall back to the main address
    assert filled[0] > 0
    assert set(filled) <= {0, 1, 5}


def test_hostile_customer(demo: tuple[list[Row], list[Row]]) -> None:
    sa1, se1 = demo
    (row,) = [r for r in _live(sa1) if r["A1_COD"] == HOSTILE_CODE]
    name = row["A1_NOME"].rstrip()
    assert name == HOSTILE_NAME
    assert "<b>" in name and "&" in name and '"' in name and "\r\nBcc: " in name
    assert row["A1_MSBLQL"] == "2" and "@" in row["A1_EMAIL"]
    overdue = [
        r
        for r in se1
        if r["E1_CLIENTE"] == HOSTILE_CODE and _collectible(r) and _date(r["E1_VENCREA"]) < AS_OF
    ]
    assert overdue  # so a letter is actually built for it


# --- títulos --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 1, 2026])
@pytest.mark.parametrize("day", range(7))
def test_coverage_of_every_stage(tmp_path: Path, seed: int, day: int) -> None:
    """Whatever the weekday and seed: a título due in 3 days and one per lateness band."""
    as_of = AS_OF + timedelta(days=day)
    url, _ = _write(tmp_path, seed=seed, as_of=as_of)
    sa1, se1 = _read(url)
    active = {(r["A1_COD"], r["A1_LOJA"]) for r in _live(sa1) if r["A1_MSBLQL"] == "2"}
    usable = [
        r
        for r in se1
        if _collectible(r)
        and (r["E1_CLIENTE"], r["E1_LOJA"]) in active
        and r["E1_SITUACA"] in FRIENDLY_SITUATIONS
    ]
    lateness = [(as_of - _date(r["E1_VENCREA"])).days for r in usable]
    in_three = as_of + timedelta(days=3)
    if in_three.weekday() < 5:
        assert any(_date(r["E1_VENCREA"]) == in_three for r in usable)
    else:  # no real due date can fall on a weekend: the due date does
        assert any(_date(r["E1_VENCTO"]) == in_three for r in usable)
    assert any(1 <= d <= 15 for d in lateness)
    assert any(16 <= d <= 45 for d in lateness)
    assert any(d > 45 for d in lateness)


def test_paid_and_partly_paid(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    main = [r for r in _live(se1) if r["E1_TIPO"] in ("NF ", "DP ", "BOL")]
    paid = [r for r in main if r["E1_SALDO"] == 0]
    partly = [r for r in main if 0 < r["E1_SALDO"] < r["E1_VALOR"]]
    untouched = [r for r in main if r["E1_SALDO"] == r["E1_VALOR"]]
    assert paid and partly and len(untouched) > len(main) / 2
    assert all(r["E1_BAIXA"].strip() for r in paid + partly)
    assert all(not r["E1_BAIXA"].strip() for r in untouched)


def test_installments_share_their_number(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    parcels = [r for r in _live(se1) if r["E1_PARCELA"] != "  "]
    assert {r["E1_PARCELA"] for r in parcels} >= {"A ", "B "}
    by_number = Counter((r["E1_FILIAL"], r["E1_PREFIXO"], r["E1_NUM"]) for r in parcels)
    assert all(count >= 2 for count in by_number.values())
    assert {r["E1_FILIAL"] for r in se1} == {"01", "02"}


def test_keys_are_unique_among_live_titulos(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    keys = Counter((*_key(r), r["E1_TIPO"]) for r in _live(se1))
    assert max(keys.values()) == 1


def test_abatements_reduce_an_open_main_titulo(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    abatements = [r for r in _live(se1) if _is_abatement(r["E1_TIPO"])]
    assert {r["E1_TIPO"] for r in abatements} == {"AB-", "IR-"}
    mains = {_key(r): r for r in se1 if _collectible(r)}
    for abatement in abatements:
        main = mains.get(_key(abatement))
        assert main is not None, abatement
        assert 0 < abatement["E1_SALDO"] <= main["E1_SALDO"] * 0.05 + 0.01


def test_never_collected_types_look_overdue_and_open(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    traps = [r for r in _live(se1) if r["E1_TIPO"].strip() in NEVER_COLLECTED]
    assert {r["E1_TIPO"] for r in traps} >= {"RA ", "PR ", "NCC", "TX "}
    assert all(r["E1_SALDO"] > 0 and _date(r["E1_VENCREA"]) < AS_OF for r in traps)


def test_unfriendly_situations_exist(demo: tuple[list[Row], list[Row]]) -> None:
    _, se1 = demo
    situations = {r["E1_SITUACA"] for r in se1 if _collectible(r)}
    assert FRIENDLY_SITUATIONS <= situations
    assert situations & {"5", "6", "F"}


def test_deleted_rows_in_both_tables(demo: tuple[list[Row], list[Row]]) -> None:
    sa1, se1 = demo
    deleted_sa1 = [r for r in sa1 if r["D_E_L_E_T_"] == "*"]
    live_stores = {(r["A1_COD"], r["A1_LOJA"]): r for r in _live(sa1)}
    assert deleted_sa1
    for row in deleted_sa1:  # an old version of a live customer, with a lower R_E_C_N_O_
        live = live_stores[(row["A1_COD"], row["A1_LOJA"])]
        assert row["R_E_C_N_O_"] < live["R_E_C_N_O_"]
    deleted_se1 = [r for r in se1 if r["D_E_L_E_T_"] == "*"]
    assert deleted_se1
    assert all(r["E1_SALDO"] > 0 and _date(r["E1_VENCREA"]) < AS_OF for r in deleted_se1)
    assert {r["D_E_L_E_T_"] for r in sa1 + se1} == {" ", "*"}


# --- size ---------------------------------------------------------------------------------------


def test_two_thousand_customers_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    url, summary = _write(tmp_path, customers=2000)
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    sa1, se1 = _read(url)
    assert summary.titles == len(se1)
    stores = {(r["A1_COD"], r["A1_LOJA"]) for r in _live(sa1)}
    assert len(stores) == 2200
    main = [r for r in _live(se1) if r["E1_TIPO"] in ("NF ", "DP ", "BOL")]
    assert 4.5 <= len(main) / len(stores) <= 5.5
    assert {(r["E1_CLIENTE"], r["E1_LOJA"]) for r in main} <= stores
    deleted = sum(1 for r in se1 if r["D_E_L_E_T_"] == "*") / len(se1)
    assert 0.01 <= deleted <= 0.05


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgresql_in_its_own_schema() -> None:
    url = make_url(
        os.environ.get("COBRANCA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    )
    engine = create_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # pragma: no cover - depends on the machine
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"demo_test_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        summary = write_demo_database(url, as_of=AS_OF, schema=schema)
        summary = write_demo_database(url, as_of=AS_OF, schema=schema)  # replaces
        assert summary.url == url.render_as_string(hide_password=True)
        if url.password:
            assert str(url.password) not in summary.url
        sa1, se1 = _read(url.render_as_string(hide_password=False), schema=schema)
        assert len(se1) == summary.titles
        assert any(r["A1_NOME"].rstrip() == HOSTILE_NAME for r in sa1)
        assert all(len(r["E1_VENCREA"]) == 8 for r in se1)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_missing_sqlite_folder_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'folder' / 'protheus.db'}"
    summary = write_demo_database(url, customers=2, seed=1, as_of=date(2026, 12, 4))
    assert summary.titles > 0 and (tmp_path / "new" / "folder" / "protheus.db").exists()
