"""ProtheusSource.reread_many: many planned letters re-read in a few queries, as reread would.

Runs on SQLite and on PostgreSQL (the latter marked ``postgres``), on hand-made SE1/SA1 tables
(see test_source.py for the helpers).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, event, update

from cobranca.config import Layout, Selection, Source
from cobranca.models import CustomerTitles
from cobranca.plan import plan_letter
from cobranca.protheus import se1_table
from cobranca.source import REREAD_CHUNK, ProtheusSource
from conftest import AS_OF
from test_source import MakeDb, cli, due, sel, tit, write_tables

EMPTY = CustomerTitles(customer=None, titles=())  # type: ignore[arg-type]


def _customers(count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` customers with 1 to 4 títulos each, some late, some not, one unreadable."""
    se1, sa1 = [], []
    number = 0
    for n in range(1, count + 1):
        code = f"{n:06d}"
        sa1.append(cli(A1_COD=code, A1_NOME=f"Cliente {n}", A1_EMAIL=f"c{n}@cliente.com.br"))
        for k in range(1 + n % 4):
            number += 1
            se1.append(
                tit(
                    E1_CLIENTE=code,
                    E1_NUM=f"{number:09d}",
                    E1_VENCREA=due(2 + (n * 7 + k * 3) % 12),
                    E1_SALDO=100.0 + number + 0.33,
                    E1_VALOR=200.0 + number,
                )
            )
    # An unreadable título (a day-first date) and an abatement, for customer 000003.
    number += 1
    se1.append(tit(E1_CLIENTE="000003", E1_NUM=f"{number:09d}", E1_VENCTO="31122025"))
    se1.append(tit(E1_CLIENTE="000003", E1_NUM="800000001", E1_SALDO=50.0))
    se1.append(tit(E1_CLIENTE="000003", E1_NUM="800000001", E1_TIPO="AB-", E1_SALDO=10.0))
    # A customer with a second store.
    sa1.append(cli(A1_COD="000002", A1_LOJA="02", A1_NOME="Dois, loja 02"))
    se1.append(tit(E1_CLIENTE="000002", E1_LOJA="02", E1_NUM="900000001"))
    return se1, sa1


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> MakeDb:
    """make_db(se1=[...], sa1=[...]) → URL of a fresh database holding those rows."""
    if request.param == "sqlite":
        files = count(1)

        def new_url() -> str:
            return f"sqlite:///{tmp_path / f'protheus{next(files)}.db'}"

    else:
        new_url = request.getfixturevalue("postgres_url")

    def make(se1: Sequence[dict[str, Any]] = (), sa1: Sequence[dict[str, Any]] = ()) -> str:
        return write_tables(new_url(), se1, sa1)

    return make


class Reader:
    def __init__(self, url: str, **source: Any):
        self.source = ProtheusSource(Source.model_validate({"url": url, "company": "01", **source}))
        self.queries = 0
        event.listen(self.source.engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.queries += 1

    def close(self) -> None:
        self.source.close()


@pytest.fixture
def reader_for() -> Iterator[Any]:
    readers: list[Reader] = []

    def make(url: str, **source: Any) -> Reader:
        readers.append(Reader(url, **source))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


def _letters(source: ProtheusSource, selection: Selection) -> list[tuple[int, ...]]:
    """The recnos of each customer's títulos, as a plan would record them."""
    return [tuple(t.recno for t in g.titles) for g in source.customers_titles(selection, AS_OF)]


def _pay(url: str, recnos: Sequence[int], **values: Any) -> None:
    se1 = se1_table(MetaData(), "01")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(se1).where(se1.c.R_E_C_N_O_.in_(recnos)).values(E1_SALDO=0.0, **values)
            )
    finally:
        engine.dispose()


def test_same_as_one_reread_per_letter(make_db: MakeDb, reader_for: Any) -> None:
    se1, sa1 = _customers(12)
    reader = reader_for(make_db(se1=se1, sa1=sa1))
    source, selection = reader.source, sel()
    letters = _letters(source, selection)
    assert len(letters) >= 10 and any(len(letter) > 1 for letter in letters)
    # Every recno of the table, in any combination: the unreadable one and the abatement too.
    n = len(se1)  # recnos n-3: unreadable, n-2: abated, n-1: its abatement, n: store 02
    letters += [tuple(range(1, n + 1)), (n - 3, n - 2, n - 1), (n,)]
    one_by_one = [source.reread(selection, AS_OF, letter) for letter in letters]
    reader.queries = 0
    batch = source.reread_many(selection, AS_OF, letters)
    assert batch == one_by_one
    assert reader.queries == 1
    assert any(group.rejected for group in batch), "the unreadable título is reported"
    assert any(t.abatements for group in batch for t in group.titles)


def test_rereads_of_every_size_send_a_few_statement_texts(make_db: MakeDb, reader_for: Any) -> None:
    """Each number of recnos is another SQL text, which the database prepares and keeps
    (SQLite: 128 a connection, tens of KB each for this join): a run's batches of every size
    must share a few."""
    se1, sa1 = _customers(30)
    reader = reader_for(make_db(se1=se1, sa1=sa1))
    source = reader.source
    planned = list(source.customers_titles(sel(), AS_OF))
    letters = [tuple(t.recno for t in group.titles) for group in planned]
    texts: set[str] = set()
    event.listen(source.engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_: texts.add(statement))  # fmt: skip
    lengths = set()
    for size in range(1, len(letters) + 1):
        groups = source.reread_many(sel(), AS_OF, letters[:size])
        assert [g.titles for g in groups] == [g.titles for g in planned[:size]]
        lengths.add(sum(map(len, letters[:size])))
    assert len(lengths) == len(letters) >= 30
    assert len(texts) <= max(lengths).bit_length() + 1, len(texts)  # 1, 2, 4... recnos


def test_reread_is_reread_many_of_one(make_db: MakeDb, reader_for: Any) -> None:
    se1, sa1 = _customers(5)
    source = reader_for(make_db(se1=se1, sa1=sa1)).source
    for letter in _letters(source, sel()):
        assert [source.reread(sel(), AS_OF, letter)] == source.reread_many(sel(), AS_OF, [letter])
        (group,) = list(source.customers_titles(sel(), AS_OF, recnos=letter))
        assert source.reread(sel(), AS_OF, letter) == group


def test_paid_titles_drop_out_and_all_paid_gives_the_empty_group(
    make_db: MakeDb, reader_for: Any
) -> None:
    se1, sa1 = _customers(8)
    url = make_db(se1=se1, sa1=sa1)
    source = reader_for(url).source
    letters = _letters(source, sel())
    several = next(i for i, letter in enumerate(letters) if len(letter) >= 3)
    single = next(i for i, letter in enumerate(letters) if len(letter) == 1 and i != several)
    deleted = next(i for i, letter in enumerate(letters) if i not in (several, single))
    paid_one = letters[several][0]
    _pay(url, [paid_one, *letters[single]])
    _pay(url, letters[deleted], D_E_L_E_T_="*")

    groups = source.reread_many(sel(), AS_OF, letters)
    assert len(groups) == len(letters)
    assert [t.recno for t in groups[several].titles] == list(letters[several][1:])
    assert groups[single] == EMPTY
    assert groups[deleted] == EMPTY
    for index, (letter, group) in enumerate(zip(letters, groups, strict=True)):
        if index not in (several, single, deleted):
            assert tuple(t.recno for t in group.titles) == letter
    assert groups == [source.reread(sel(), AS_OF, letter) for letter in letters]


def test_a_letter_no_longer_selected_gets_the_empty_group(make_db: MakeDb, reader_for: Any) -> None:
    se1, sa1 = _customers(4)
    source = reader_for(make_db(se1=se1, sa1=sa1)).source
    letters = _letters(source, sel())
    narrower = sel(customers={"include": ["000002"]})
    groups = source.reread_many(narrower, AS_OF, letters)
    kept = [g.customer.key for g in groups if g.titles]
    assert kept and set(kept) <= {"000002/01", "000002/02"}
    assert [g for g in groups if not g.titles] == [EMPTY] * (len(groups) - len(kept))


def test_order_is_the_input_order(make_db: MakeDb, reader_for: Any) -> None:
    se1, sa1 = _customers(10)
    source = reader_for(make_db(se1=se1, sa1=sa1)).source
    letters = _letters(source, sel())
    shuffled = letters[:]
    random.Random(4).shuffle(shuffled)
    shuffled = [tuple(reversed(letter)) for letter in shuffled]  # order within a letter too
    shuffled.insert(3, ())  # an empty letter: the empty group, no query
    shuffled.insert(5, (999_999,))  # no such título
    shuffled.append(shuffled[0])  # the same letter twice
    groups = source.reread_many(sel(), AS_OF, shuffled)
    assert groups == [source.reread(sel(), AS_OF, letter) for letter in shuffled]
    assert groups[3] == EMPTY and groups[5] == EMPTY
    assert groups[-1] == groups[0]
    for letter, group in zip(shuffled, groups, strict=True):
        if letter and letter != (999_999,):
            assert {t.recno for t in group.titles} == set(letter)
            # Títulos in due-date order, whatever the order of the recnos given.
            assert [t.real_due_date for t in group.titles] == sorted(
                t.real_due_date for t in group.titles
            )


def test_duplicate_recnos_read_once(make_db: MakeDb, reader_for: Any) -> None:
    se1, sa1 = _customers(4)
    source = reader_for(make_db(se1=se1, sa1=sa1)).source
    letter = next(letter for letter in _letters(source, sel()) if len(letter) > 1)
    (group,) = source.reread_many(sel(), AS_OF, [letter + letter])
    assert group == source.reread(sel(), AS_OF, letter)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5])
def test_chunks_give_the_same_result(make_db: MakeDb, reader_for: Any, chunk_size: int) -> None:
    se1, sa1 = _customers(9)
    reader = reader_for(make_db(se1=se1, sa1=sa1))
    source = reader.source
    letters = _letters(source, sel())
    assert max(map(len, letters)) > 2, "some letter is larger than a small chunk"
    expected = [source.reread(sel(), AS_OF, letter) for letter in letters]
    reader.queries = 0
    assert source.reread_many(sel(), AS_OF, letters, chunk_size=chunk_size) == expected
    # Whole letters packed in order up to chunk_size recnos; a larger letter alone.
    chunks, filled = 0, chunk_size
    for letter in letters:
        if filled + len(letter) > chunk_size:
            chunks, filled = chunks + 1, 0
        filled += len(letter)
    assert reader.queries == chunks
    assert chunks > 1


def test_more_recnos_than_bound_parameters_allow(make_db: MakeDb, reader_for: Any) -> None:
    """70,000 recnos (SQLite allows 32,766 parameters, PostgreSQL 65,535), in one letter too."""
    se1, sa1 = _customers(6)
    source = reader_for(make_db(se1=se1, sa1=sa1)).source
    letters = _letters(source, sel())
    padded = [letter + tuple(range(100_000, 100_000 + 5_000)) for letter in letters]
    many = padded * 2
    assert sum(map(len, many)) > 70_000
    expected = [source.reread(sel(), AS_OF, letter) for letter in letters]
    assert source.reread_many(sel(), AS_OF, many) == expected * 2
    huge = letters[0] + tuple(range(100_000, 170_000))
    assert source.reread(sel(), AS_OF, huge) == expected[0]
    assert source.reread_many(sel(), AS_OF, [huge], chunk_size=REREAD_CHUNK) == [expected[0]]


def test_nothing_to_read_makes_no_query(make_db: MakeDb, reader_for: Any) -> None:
    reader = reader_for(make_db(se1=[tit()], sa1=[cli()]))
    assert reader.source.reread_many(sel(), AS_OF, []) == []
    assert reader.source.reread_many(sel(), AS_OF, [(), ()]) == [EMPTY, EMPTY]
    assert reader.source.reread(sel(), AS_OF, ()) == EMPTY
    assert reader.queries == 0


def test_exclusive_customers(make_db: MakeDb, reader_for: Any) -> None:
    url = make_db(
        se1=[tit(E1_FILIAL="01", E1_NUM="1"), tit(E1_FILIAL="02", E1_NUM="2")],
        sa1=[cli(A1_FILIAL="01", A1_NOME="Um da 01"), cli(A1_FILIAL="02", A1_NOME="Um da 02")],
    )
    source = reader_for(url, customers_shared=False).source
    groups = source.reread_many(sel(), AS_OF, [(1, 2), (2,), (1,)])
    assert [(g.customer.name, [t.number for t in g.titles]) for g in groups] == [
        ("Um da 01", ["1", "2"]),  # grouped by code and store, as customers_titles does
        ("Um da 02", ["2"]),
        ("Um da 01", ["1"]),
    ]
    assert groups == [source.reread(sel(), AS_OF, letter) for letter in [(1, 2), (2,), (1,)]]


def test_fast_built_objects_have_every_field(make_db: MakeDb, reader_for: Any) -> None:
    """The source and the plan fill their dataclasses through models.trusted: nothing missing."""
    se1, sa1 = _customers(4)
    source = reader_for(make_db(se1=se1, sa1=sa1)).source
    (group, *_) = source.reread_many(sel(), AS_OF, _letters(source, sel()))
    layout = Layout.model_validate(
        {"name": "x", "schedule": "0 9 * * *", "template": "t", "subject": "s",
         "selection": {"days": {"min": 1, "max": 15}}}
    )  # fmt: skip
    letter = plan_letter(group, layout, AS_OF, None)
    built = [group, group.customer, group.customer.address, *group.titles, letter]
    for instance in built:
        assert set(vars(instance)) == {f.name for f in fields(instance)}, type(instance)
        assert replace(instance) == instance
