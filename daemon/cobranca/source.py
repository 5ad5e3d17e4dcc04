"""Read open títulos and their customers from the Protheus database (SE1 + SA1), read only.

Selection happens in SQL with bound parameters; rows are streamed in customer order and grouped
one customer at a time, so memory stays flat however large SE1 is.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from math import copysign
from typing import Any

from sqlalchemy import (
    ColumnElement,
    MetaData,
    Select,
    and_,
    bindparam,
    create_engine,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Engine, Row
from sqlalchemy.sql.elements import BindParameter

from . import protheus
from .config import Selection
from .config import Source as SourceConfig
from .inlists import in_values
from .models import Address, Customer, CustomerTitles, Title, trusted


class SourceError(Exception):
    """The ERP database could not be read; the message never contains a password."""


_CUSTOMER_KEY = re.compile(r"[^/\s]+(/[^/\s]+)?")
_KEY_PARTS = ("E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA", "E1_TIPO", "E1_CLIENTE", "E1_LOJA")
MAX_FILTER_DAYS = 36_500  # as the config's day windows: wider is a typo, and overflows dates
NOTHING_OWED = "nothing owed after abatements"
REREAD_CHUNK = 500  # recnos per re-read query: far below SQLite's and PostgreSQL's limits


@dataclass(frozen=True)
class TitleFilter:
    """Which open títulos `cobranca titles` lists; every field narrows, empty means "all".

    ``customers`` are CODE or CODE/STORE; ``name_contains`` is a case-insensitive fragment of
    A1_NOME or A1_NREDUZ, matched literally (``%`` and ``_`` are not wildcards); ``due_from`` /
    ``due_to`` bound the real due date E1_VENCREA; ``days_late_min`` / ``days_late_max`` bound
    days_from_due = as_of − E1_VENCREA (negative: not yet due); ``min_balance`` applies to the
    balance net of abatements; ``title_keys`` are Protheus key strings
    ``filial|prefixo|num|parcela|tipo|cliente|loja``. Raises ValueError for a filter that
    cannot be right (a bad key, a reversed range).
    """

    customers: tuple[str, ...] = ()
    name_contains: str = ""
    branches: tuple[str, ...] = ()
    due_from: date | None = None
    due_to: date | None = None
    days_late_min: int | None = None
    days_late_max: int | None = None
    min_balance: Decimal = Decimal("0.00")
    types: tuple[str, ...] = ()
    situations: tuple[str, ...] = ()
    title_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("customers", "branches", "types", "situations", "title_keys"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of strings, not one string")
            object.__setattr__(self, name, tuple(str(v).strip() for v in value))
        for key in self.customers:
            if not _CUSTOMER_KEY.fullmatch(key):
                raise ValueError(f"customer {key!r} is not CODE or CODE/STORE")
        keys = tuple(_normal_title_key(key) for key in self.title_keys)
        object.__setattr__(self, "title_keys", keys)
        if self.due_from and self.due_to and self.due_from > self.due_to:
            raise ValueError(
                f"due-from {self.due_from.isoformat()} is after due-to {self.due_to.isoformat()}"
            )
        for name in ("days_late_min", "days_late_max"):
            value = getattr(self, name)
            if value is not None and abs(value) > MAX_FILTER_DAYS:
                raise ValueError(f"{name} {value} is beyond ±{MAX_FILTER_DAYS} days")
        low, high = self.days_late_min, self.days_late_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"days-late-min ({low}) is greater than days-late-max ({high})")
        try:
            minimum = Decimal(self.min_balance)
        except (InvalidOperation, TypeError, ValueError):
            raise ValueError(f"min_balance {self.min_balance!r} is not an amount") from None
        if not minimum.is_finite() or minimum < 0:
            raise ValueError(f"min_balance must be zero or more, got {self.min_balance}")
        object.__setattr__(self, "min_balance", minimum)

    def due_window(self, as_of: date) -> tuple[date | None, date | None]:
        """(earliest, latest) real due date this filter accepts on ``as_of``."""
        earliest, latest = self.due_from, self.due_to
        if self.days_late_max is not None:
            bound = as_of - timedelta(days=self.days_late_max)
            earliest = max(earliest, bound) if earliest else bound
        if self.days_late_min is not None:
            bound = as_of - timedelta(days=self.days_late_min)
            latest = min(latest, bound) if latest else bound
        return earliest, latest


def _normal_title_key(key: str) -> str:
    parts = [part.strip() for part in key.split("|")]
    if len(parts) != len(_KEY_PARTS):
        raise ValueError(
            f"título key {key!r} must have 7 parts: filial|prefixo|num|parcela|tipo|cliente|loja"
        )
    if not all(parts[2:3] + parts[4:]):
        raise ValueError(f"título key {key!r}: num, tipo, cliente and loja cannot be blank")
    return "|".join(parts)


class ProtheusSource:
    """SE1/SA1 through SQLAlchemy Core. Works on any database SQLAlchemy reaches."""

    def __init__(self, config: SourceConfig, engine: Engine | None = None):
        self.config = config
        if engine is None and config.sqlite_file and not config.sqlite_file.exists():
            raise SourceError(
                f"source database file {config.sqlite_file} does not exist "
                "(for the demo, create it with: cobranca demo-db)"
            )
        self.engine = engine or create_engine(config.engine_url(), pool_pre_ping=True)
        metadata = MetaData()
        self.se1 = protheus.se1_table(metadata, config.company, config.table_schema)
        self.sa1 = protheus.sa1_table(metadata, config.company, config.table_schema)
        self._abatements = self.se1.alias("abatement")
        self._collectible = frozenset(config.collectible_types)
        self._reread_statements: dict[tuple[Selection, date, bool], Select] = {}

    def close(self) -> None:
        self.engine.dispose()

    def sharing_problem(self) -> str | None:
        """With ``customers_shared``, customers are read from SA1's blank branch only: SA1 rows
        that carry a branch would silently get no letter. Their branch, said plainly, or None."""
        if not self.config.customers_shared:
            return None
        a = self.sa1.c
        with self.engine.connect() as connection:
            branch = connection.scalar(
                select(a.A1_FILIAL)
                .where(a.D_E_L_E_T_ != protheus.DELETED, a.A1_FILIAL.not_in(_BLANK_BRANCHES))
                .limit(1)
            )
        if branch is None:
            return None
        return (
            f"source.customers_shared is true, but SA1 has customers in branch (A1_FILIAL) "
            f"{branch.strip()!r}: their títulos get no letter; set source.customers_shared: "
            "false if SA1 is exclusive"
        )

    def customers_titles(
        self,
        selection: Selection,
        as_of: date,
        customers: Sequence[str] = (),
        recnos: Sequence[int] = (),
    ) -> Iterator[CustomerTitles]:
        """Yield each selected customer with its títulos, customer by customer.

        ``customers`` (CODE or CODE/STORE) and ``recnos`` (SE1 primary keys) narrow the read on
        top of the selection: ``recnos`` re-reads a planned letter's títulos just before it
        goes out, by primary key, so a título paid since the plan drops out.
        """
        return self._stream(self.statement(selection, as_of, customers, recnos), as_of)

    def open_titles(self, filter: TitleFilter, as_of: date) -> Iterator[CustomerTitles]:
        """Open títulos matching ``filter``, customer by customer (finance's list).

        The same reading as a layout's (live, collectible, abatements subtracted, unreadable
        rows reported in ``rejected``), narrowed by the filter instead of a selection; a
        título with nothing owed after abatements is reported, one below
        ``filter.min_balance`` (net) is left out. A customer is yielded when it has títulos
        or rejected rows.
        """
        minimum = filter.min_balance
        for group in self._stream(self.filter_statement(filter, as_of), as_of):
            titles = tuple(
                t for t in group.titles if t.net_balance > 0 and t.net_balance >= minimum
            )
            rejected = group.rejected + tuple(
                (t.key, NOTHING_OWED) for t in group.titles if t.net_balance <= 0
            )
            if titles or rejected:
                yield CustomerTitles(customer=group.customer, titles=titles, rejected=rejected)

    def _stream(self, statement: Select, as_of: date) -> Iterator[CustomerTitles]:
        with self.engine.connect() as connection:
            result = connection.execution_options(
                stream_results=True, yield_per=self.config.fetch_size
            ).execute(statement)
            for _, rows in itertools.groupby(result, key=_customer_of):
                yield self._group(list(rows), as_of)

    def reread(self, selection: Selection, as_of: date, recnos: Sequence[int]) -> CustomerTitles:
        """A planned letter's títulos as they are now (an empty group when all were paid)."""
        return self.reread_many(selection, as_of, (recnos,))[0]

    def reread_many(
        self,
        selection: Selection,
        as_of: date,
        letters: Sequence[Sequence[int]],
        *,
        chunk_size: int = REREAD_CHUNK,
    ) -> list[CustomerTitles]:
        """Planned letters' títulos as they are now, one group per letter, in input order.

        ``letters`` holds one sequence of SE1 R_E_C_N_O_ per letter. Each group is exactly what
        ``customers_titles(selection, as_of, recnos=letter)`` yields first (an empty group when
        every título was paid, or none is selected any more), but whole letters are read
        together, one query per ``chunk_size`` recnos (a letter is never split: a larger one is
        read alone, its recnos written into the SQL as integers instead of bound parameters).
        """
        wanted = [tuple(dict.fromkeys(int(recno) for recno in letter)) for letter in letters]
        groups = [_EMPTY_GROUP] * len(wanted)
        chunk_size = max(1, chunk_size)
        chunks = _letter_chunks(wanted, chunk_size)
        if not chunks:
            return groups
        with self.engine.connect() as connection:
            for chunk in chunks:
                recnos = sorted({recno for index in chunk for recno in wanted[index]})
                inline = len(recnos) > chunk_size
                statement = self._reread_statement(selection, as_of, inline)
                bound = recnos if inline else in_values(recnos)
                rows = connection.execute(statement, {"recnos": bound}).all()
                positions: dict[int, list[int]] = {}
                for position, row in enumerate(rows):
                    positions.setdefault(row[_RECNO], []).append(position)
                for index in chunk:
                    picked = sorted(
                        {p for recno in wanted[index] for p in positions.get(recno, ())}
                    )
                    if not picked:
                        continue
                    # As customers_titles would group them: the first customer's run of rows.
                    key = _customer_of(rows[picked[0]])
                    own = []
                    for p in picked:
                        if _customer_of(rows[p]) != key:
                            break
                        own.append(rows[p])
                    groups[index] = self._group(own, as_of)
        return groups

    def _reread_statement(self, selection: Selection, as_of: date, inline: bool) -> Select:
        """The selection's statement for títulos by R_E_C_N_O_ (bound as ``recnos``), cached.

        ``inline`` writes the recnos into the SQL as integers, beyond any bound-parameter limit.
        """
        key = (selection, as_of, inline)
        statement = self._reread_statements.get(key)
        if statement is None:
            recnos = bindparam("recnos", expanding=True, literal_execute=inline)
            statement = self._statement(self._conditions(selection, as_of, (), recnos))
            if len(self._reread_statements) >= 32:  # a run has a few layouts and one as-of
                self._reread_statements.clear()
            self._reread_statements[key] = statement
        return statement

    def statement(
        self,
        selection: Selection,
        as_of: date,
        customers: Sequence[str] = (),
        recnos: Sequence[int] = (),
    ) -> Select:
        return self._statement(self._conditions(selection, as_of, customers, recnos))

    def filter_statement(self, filter: TitleFilter, as_of: date) -> Select:
        return self._statement(self._filter_conditions(filter, as_of))

    def _statement(self, conditions: Sequence[ColumnElement[bool]]) -> Select:
        se1, sa1 = self.se1, self.sa1
        c, a = se1.c, sa1.c
        join_on = and_(
            a.A1_COD == c.E1_CLIENTE,
            a.A1_LOJA == c.E1_LOJA,
            a.D_E_L_E_T_ != protheus.DELETED,
        )
        if self.config.customers_shared:
            # A shared table's rows have a blank branch: saying so lets the database use SA1's
            # index (A1_FILIAL, A1_COD, A1_LOJA) instead of scanning it for every título.
            join_on = and_(join_on, a.A1_FILIAL.in_(_BLANK_BRANCHES))
        else:
            join_on = and_(join_on, a.A1_FILIAL == c.E1_FILIAL)
        columns = [c[name] for name in _SE1_COLUMNS] + [a[name] for name in _SA1_COLUMNS]
        labelled = [column.label(column.key) for column in columns]
        return (
            select(*labelled, self._abatement_sum().label("abatements"))
            .select_from(se1.join(sa1, join_on))
            .where(*conditions)
            .order_by(
                c.E1_CLIENTE, c.E1_LOJA, c.E1_VENCREA, c.E1_FILIAL, c.E1_PREFIXO, c.E1_NUM,
                c.E1_PARCELA, c.E1_TIPO,
            )
        )  # fmt: skip

    def _abatement_sum(self) -> Any:
        """Open abatement títulos (type with '-' third) share the main título's key."""
        c, ab = self.se1.c, self._abatements.c
        return (
            select(func.coalesce(func.sum(ab.E1_SALDO), 0))
            .where(
                ab.D_E_L_E_T_ != protheus.DELETED,
                ab.E1_TIPO.like(protheus.ABATEMENT_TYPE_PATTERN),
                ab.E1_SALDO > 0,
                ab.E1_FILIAL == c.E1_FILIAL,
                ab.E1_PREFIXO == c.E1_PREFIXO,
                ab.E1_NUM == c.E1_NUM,
                ab.E1_PARCELA == c.E1_PARCELA,
                ab.E1_CLIENTE == c.E1_CLIENTE,
                ab.E1_LOJA == c.E1_LOJA,
            )
            .scalar_subquery()
        )

    def _open_conditions(
        self, min_balance: Decimal, earliest: date | None, latest: date | None
    ) -> list[ColumnElement[bool]]:
        """What every read shares: live, open, collectible rows in a window of real due dates.

        Rows that are bad data (a negative balance, a blank or implausible real due date) are
        read whatever the window, so that they are reported rather than silently ignored.
        """
        c = self.se1.c
        window: list[ColumnElement[bool]] = [c.E1_VENCREA >= _FIRST_DATE]
        if earliest is not None:
            window.append(c.E1_VENCREA >= _date_bound(earliest))
        if latest is not None:
            window.append(c.E1_VENCREA <= _date_bound(latest))
        return [
            c.D_E_L_E_T_ != protheus.DELETED,
            # Open títulos whose gross balance can reach the minimum (gross ≥ net, so this only
            # prefilters; half a cent of slack keeps a float saldo such as 133.32999… that is
            # worth R$ 133,33; the exact test is on the net balance). Negative balances are
            # read too, to be reported as bad data rather than silently ignored.
            or_(
                c.E1_SALDO < 0,
                and_(c.E1_SALDO > 0, c.E1_SALDO >= float(min_balance) - 0.005),
            ),
            not_(c.E1_TIPO.like(protheus.ABATEMENT_TYPE_PATTERN)),
            func.rtrim(c.E1_TIPO).not_in(protheus.NEVER_COLLECTED_TYPES),
            # In the window of real due dates; a blank due date is read to be reported.
            or_(and_(*window), c.E1_VENCREA < _FIRST_DATE, c.E1_VENCREA > _LAST_DATE),
        ]

    def _conditions(
        self,
        selection: Selection,
        as_of: date,
        customers: Sequence[str],
        recnos: Sequence[int] | BindParameter[Any],
    ) -> list[ColumnElement[bool]]:
        c, a = self.se1.c, self.sa1.c
        days = selection.days
        earliest = as_of - timedelta(days=days.max) if days.max is not None else None
        latest = as_of - timedelta(days=days.min) if days.min is not None else None
        conditions = self._open_conditions(selection.min_balance, earliest, latest)
        if isinstance(recnos, BindParameter) or recnos:
            conditions.append(c.R_E_C_N_O_.in_(recnos))
        if selection.branches:
            conditions.append(_trimmed_in(c.E1_FILIAL, selection.branches))
        if selection.types.include:
            conditions.append(_trimmed_in(c.E1_TIPO, selection.types.include))
        if selection.types.exclude:
            conditions.append(not_(_trimmed_in(c.E1_TIPO, selection.types.exclude)))
        if selection.situations:
            conditions.append(_trimmed_in(c.E1_SITUACA, selection.situations))
        if selection.customers.include:
            conditions.append(self._customer_match(selection.customers.include))
        if selection.customers.exclude:
            conditions.append(not_(self._customer_match(selection.customers.exclude)))
        if customers:
            conditions.append(self._customer_match(customers))
        if selection.skip_blocked:
            conditions.append(a.A1_MSBLQL != "1")
        return conditions

    def _filter_conditions(self, filter: TitleFilter, as_of: date) -> list[ColumnElement[bool]]:
        c, a = self.se1.c, self.sa1.c
        conditions = self._open_conditions(filter.min_balance, *filter.due_window(as_of))
        if filter.customers:
            conditions.append(self._customer_match(filter.customers))
        if filter.name_contains:
            pattern = f"%{self._like_escaped(filter.name_contains)}%"
            conditions.append(
                or_(
                    a.A1_NOME.ilike(pattern, escape=_LIKE_ESCAPE),
                    a.A1_NREDUZ.ilike(pattern, escape=_LIKE_ESCAPE),
                )
            )
        if filter.branches:
            conditions.append(_trimmed_in(c.E1_FILIAL, filter.branches))
        if filter.types:
            conditions.append(_trimmed_in(c.E1_TIPO, filter.types))
        if filter.situations:
            conditions.append(_trimmed_in(c.E1_SITUACA, filter.situations))
        if filter.title_keys:
            columns = [c[name] for name in _KEY_PARTS]
            conditions.append(
                or_(
                    *(
                        and_(*(_trimmed_in(col, (part,)) for col, part in
                               zip(columns, key.split("|"), strict=True)))
                        for key in filter.title_keys
                    )
                )
            )  # fmt: skip
        return conditions

    def _like_escaped(self, text: str) -> str:
        """``text`` as a literal inside a LIKE pattern (its wildcards are not wildcards).

        SQL Server also takes ``[`` as a wildcard (a character class); Oracle refuses an escape
        character before anything but ``%``, ``_`` or itself, so ``[`` is escaped there only.
        """
        specials = {_LIKE_ESCAPE, "%", "_"}
        if self.engine.dialect.name == "mssql":
            specials.add("[")
        return "".join(_LIKE_ESCAPE + ch if ch in specials else ch for ch in text)

    def _customer_match(self, keys: Sequence[str]) -> ColumnElement[bool]:
        c = self.se1.c
        matches = []
        for key in keys:
            code, _, store = key.partition("/")
            match = func.rtrim(c.E1_CLIENTE) == code
            if store:
                match = and_(match, func.rtrim(c.E1_LOJA) == store)
            matches.append(match)
        return or_(*matches) if matches else true()

    def _group(self, rows: Sequence[Row[Any]], as_of: date) -> CustomerTitles:
        """One customer's rows (all with the same E1_CLIENTE and E1_LOJA) as its group."""
        first = rows[0]
        code, store = _trim(first[_CLIENTE]), _trim(first[_LOJA])
        collectible = self._collectible
        titles: list[Title] = []
        rejected: list[tuple[str, str]] = []
        for row in rows:
            try:
                titles.append(_title(row, as_of, collectible, code, store))
            except ValueError as exc:
                rejected.append((_row_key(row), str(exc)))
        return trusted(CustomerTitles, {
            "customer": _customer(first, code, store),
            "titles": tuple(titles),
            "rejected": tuple(rejected),
        })  # fmt: skip


_EMPTY_GROUP = CustomerTitles(customer=None, titles=())  # type: ignore[arg-type]


def _letter_chunks(letters: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Indexes of the non-empty letters, packed in order into chunks of up to ``size`` recnos.

    A letter is never split (its rows must come back in one ordered result); one with more
    than ``size`` recnos makes a chunk of its own.
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for index, letter in enumerate(letters):
        if not letter:
            continue
        if current and filled + len(letter) > size:
            chunks.append(current)
            current, filled = [], 0
        current.append(index)
        filled += len(letter)
    if current:
        chunks.append(current)
    return chunks


# A blank A1_FILIAL as DBAccess stores it (space-padded to the width), or as an empty string
# (some databases store blank CHAR fields so, as they do blank dates).
_BLANK_BRANCHES = ("  ", "")
_FIRST_DATE = "19000101"  # below it: blank or garbage dates
_LAST_DATE = "21001231"  # above it: garbage (e.g. day-first 31122025) or a typo
_LIKE_ESCAPE = "/"


def _date_bound(day: date) -> str:
    """A window bound as YYYYMMDD, kept within the plausible dates (the window's own limits)."""
    return protheus.format_date(min(max(day, date(1900, 1, 1)), date(2100, 12, 31)))


def _trimmed_in(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """The trimmed column is one of ``values``; a blank value matches a blank (padded) field.

    Oracle turns a trimmed blank into NULL ('' is NULL there), so blank is tested both ways.
    """
    wanted = tuple(values)
    filled = tuple(v for v in wanted if v)
    trimmed = func.rtrim(column)
    tests: list[ColumnElement[bool]] = []
    if filled:
        tests.append(trimmed == filled[0] if len(filled) == 1 else trimmed.in_(filled))
    if len(filled) < len(wanted):
        tests += [trimmed == "", trimmed.is_(None)]
    return or_(*tests) if len(tests) > 1 else tests[0]


def _row_key(row: Row[Any]) -> str:
    """The título's Protheus key (its first seven columns are the key's)."""
    return "|".join(protheus.trimmed(row[i]) for i in range(len(_KEY_PARTS)))


# --- rows to Title and Customer ---------------------------------------------------------------
#
# The hot path of every read: positional access to the row (by name costs far more), trimmed
# strings and parsed dates checked cheaply before the general conversion, floats converted once
# per distinct value, and the frozen dataclasses filled at once (models.trusted).
# Every rule and every error message is the general conversion's (protheus.trimmed,
# parse_date, to_money, to_rate): the fast paths only skip work whose result is known.

_SE1_COLUMNS = (
    *_KEY_PARTS, "E1_EMISSAO", "E1_VENCTO", "E1_VENCREA", "E1_VALOR", "E1_SALDO", "E1_SITUACA",
    "E1_PORCJUR", "E1_VALJUR", "E1_SDACRES", "E1_SDDECRE", "E1_CODDIG", "E1_CODBAR",
    "R_E_C_N_O_",
)  # fmt: skip
_SA1_COLUMNS = (
    "A1_NOME", "A1_NREDUZ", "A1_PESSOA", "A1_CGC", "A1_EMAIL", "A1_END", "A1_BAIRRO", "A1_MUN",
    "A1_EST", "A1_CEP", "A1_ENDCOB", "A1_BAIRROC", "A1_MUNC", "A1_ESTC", "A1_CEPC", "A1_MSBLQL",
)  # fmt: skip
# Positions in a row of the statement: SE1's columns, SA1's, then the abatements' sum.
(
    _FILIAL, _PREFIXO, _NUM, _PARCELA, _TIPO, _CLIENTE, _LOJA, _EMISSAO, _VENCTO, _VENCREA,
    _VALOR, _SALDO, _SITUACA, _PORCJUR, _VALJUR, _SDACRES, _SDDECRE, _CODDIG, _CODBAR, _RECNO,
) = range(len(_SE1_COLUMNS))  # fmt: skip
_A1 = len(_SE1_COLUMNS)  # where SA1's columns start
_ABATEMENTS = _A1 + len(_SA1_COLUMNS)
_customer_of = operator.itemgetter(_CLIENTE, _LOJA)  # the raw (E1_CLIENTE, E1_LOJA)

# Entries per conversion cache, cleared when full. Amounts rarely repeat except within a
# customer's títulos, so a larger money cache was memory for nothing: 65,536 entries cost
# 12 MB of a 1M-título read (88 MB against 76) for no speed (docs/benchmarks.md). Dates and
# short codes stay far below it (150 and 13 distinct at 1M títulos).
_CACHE_LIMIT = 8_192
_MISSING: Any = object()


class _TrimmedCache(dict[Any, str]):
    """protheus.trimmed of the few values a column such as E1_TIPO or E1_FILIAL holds."""

    def __missing__(self, value: Any) -> str:
        trimmed = protheus.trimmed(value)
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[value] = trimmed
        return trimmed


_short = _TrimmedCache()
_dates: dict[Any, date | None] = {}
_implausible: dict[date, bool] = {}
_ZERO_MONEY = protheus.to_money(0)
_ZERO_RATE = protheus.to_rate(0)
_money: dict[float, Decimal] = {}
_rates: dict[float, Decimal] = {}


def _trim(value: Any) -> str:
    """protheus.trimmed: printable text has no control character to replace."""
    if value.__class__ is str:
        # Stripping first is safe: what strip removes is whitespace, control or not.
        stripped = value.strip()
        if stripped.isprintable():
            return stripped  # type: ignore[no-any-return]
    return protheus.trimmed(value)


def _date(value: Any, name: str) -> date | None:
    """protheus.parse_date, remembered per distinct text; its errors name the field."""
    parsed = _dates.get(value, _MISSING)
    if parsed is not _MISSING:
        return parsed  # type: ignore[no-any-return]
    try:
        parsed = protheus.parse_date(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if value.__class__ is str:
        if len(_dates) >= _CACHE_LIMIT:
            _dates.clear()
        _dates[value] = parsed
    return parsed  # type: ignore[no-any-return]


def _is_implausible(real_due: date) -> bool:
    flag = _implausible.get(real_due)
    if flag is None:
        flag = protheus.format_date(real_due) > _LAST_DATE
        if len(_implausible) >= _CACHE_LIMIT:
            _implausible.clear()
        _implausible[real_due] = flag
    return flag


# Equal numbers (a float and an int alike) convert alike, so floats and ints are converted once
# per value; zero apart, never remembered, as -0.0 equals 0.0 but converts to a negative zero
# (a positive zero is answered at once). Decimals are converted each time (an exact Decimal
# and the float equal to it may round differently). One call a field: this runs seven times
# for every row read.


def _field_reader(
    cache: dict[float, Decimal], zero: Decimal, convert: Callable[[Any], Decimal]
) -> Callable[[Any, str], Decimal]:
    """``convert`` for a numeric column, remembered in ``cache``; no number names its field."""

    def read(value: Any, name: str) -> Decimal:
        kind = value.__class__
        plain = kind is float or kind is int
        if plain:
            if value:
                result = cache.get(value)
                if result is not None:
                    return result
            elif copysign(1.0, value) > 0:
                return zero
        try:
            result = convert(value)
        except ArithmeticError:  # decimal.InvalidOperation
            result = None
        if result is None or not result.is_finite():  # Decimal("NaN") compares with an error
            shown = protheus.trimmed(str(value))  # text in the column: no CR/LF into a log
            raise ValueError(f"{name}: not a number ({shown}): the letter would be wrong")
        if plain and value:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[value] = result
        return result

    return read


_money_field = _field_reader(_money, _ZERO_MONEY, protheus.to_money)
_rate_field = _field_reader(_rates, _ZERO_RATE, protheus.to_rate)


def days_late(as_of: date, due: date | None, real_due: date) -> int:
    """As Protheus counts: from E1_VENCTO, but zero while as_of is on or before E1_VENCREA."""
    if as_of <= real_due:
        return 0
    return (as_of - (due or real_due)).days


def _title(
    row: Sequence[Any], as_of: date, collectible_types: Container[str], code: str, store: str
) -> Title:
    """One SE1 row (of ``ProtheusSource.statement``) as a Title, or ValueError saying which
    field makes it unusable; ``code`` and ``store`` are the row's customer, already trimmed."""
    short = _short
    kind = short[row[_TIPO]]
    if kind not in collectible_types:
        raise ValueError(
            f"E1_TIPO: type {kind!r} is not a known collectible type "
            "(add it to source.collectible_types if it should be collected)"
        )
    balance = _money_field(row[_SALDO], "E1_SALDO")
    if balance < _ZERO_MONEY:
        raise ValueError(f"E1_SALDO: negative balance ({balance})")
    rate = _rate_field(row[_PORCJUR], "E1_PORCJUR")
    per_day = _money_field(row[_VALJUR], "E1_VALJUR")
    additions = _money_field(row[_SDACRES], "E1_SDACRES")
    deductions = _money_field(row[_SDDECRE], "E1_SDDECRE")
    if (
        rate < _ZERO_RATE
        or per_day < _ZERO_MONEY
        or additions < _ZERO_MONEY
        or deductions < _ZERO_MONEY
    ):  # which one, for the message
        for name, amount in (
            ("E1_PORCJUR", rate),
            ("E1_VALJUR", per_day),
            ("E1_SDACRES", additions),
            ("E1_SDDECRE", deductions),
        ):
            if amount < 0:
                raise ValueError(f"{name}: negative value ({amount}): the letter would be wrong")
    real_due = _date(row[_VENCREA], "E1_VENCREA")
    if real_due is None:
        raise ValueError("real due date (E1_VENCREA) is blank")
    if _is_implausible(real_due):
        raise ValueError(f"E1_VENCREA: implausible date {real_due.isoformat()}")
    due = _date(row[_VENCTO], "E1_VENCTO")
    number = _trim(row[_NUM])
    issued = _date(row[_EMISSAO], "E1_EMISSAO")
    amount = _money_field(row[_VALOR], "E1_VALOR")
    # An int 0 where SQL's COALESCE gave no sum.
    abatements = _money_field(row[_ABATEMENTS], "abatements (E1_SALDO of AB-/IR- títulos)")
    days_from_due = (as_of - real_due).days
    return trusted(Title, {
        "branch": short[row[_FILIAL]],
        "prefix": short[row[_PREFIXO]],
        "number": number,
        "installment": short[row[_PARCELA]],
        "type": kind,
        "customer_code": code,
        "customer_store": store,
        "issue_date": issued,
        "due_date": due,
        "real_due_date": real_due,
        "value": amount,
        "balance": balance,
        "abatements": abatements,
        "situation": short[row[_SITUACA]],
        "days_from_due": days_from_due,
        "days_late": days_late(as_of, due, real_due),
        "recno": int(row[_RECNO]),
        "interest_rate": rate,
        "interest_per_day": per_day,
        "additions": additions,
        "deductions": deductions,
        "typeable_line": _trim(row[_CODDIG]),
        "barcode": _trim(row[_CODBAR]),
    })  # fmt: skip


def _customer(row: Sequence[Any], code: str, store: str) -> Customer:
    """The customer (SA1 columns) of a row of ``ProtheusSource.statement``; ``code`` and
    ``store`` already trimmed."""
    trim, trimmed = _trim, protheus.trimmed
    # The billing address is used only when all five of its fields are filled (FINR811A).
    chosen = []
    for value in row[_A1 + 10 : _A1 + 15]:  # A1_ENDCOB, A1_BAIRROC, A1_MUNC, A1_ESTC, A1_CEPC
        text = trim(value)
        if not text:
            # A1_END, A1_BAIRRO, A1_MUN, A1_EST, A1_CEP
            chosen = [trim(v) for v in row[_A1 + 5 : _A1 + 10]]
            break
        chosen.append(text)
    address = trusted(Address, dict(zip(_ADDRESS_FIELDS, chosen, strict=True)))
    # A1_NOME, A1_NREDUZ, A1_PESSOA, A1_CGC, A1_EMAIL (_trim, inline)
    name, short_name, person, tax_id, emails = (
        text if value.__class__ is str and (text := value.strip()).isprintable()
        else trimmed(value)
        for value in row[_A1 : _A1 + 5]
    )  # fmt: skip
    return trusted(Customer, {
        "code": code,
        "store": store,
        "name": name,
        "short_name": short_name,
        "tax_id": tax_id,
        "person_type": person,
        "raw_emails": emails,
        "address": address,
        "blocked": _short[row[_A1 + 15]] == "1",
    })  # fmt: skip


_ADDRESS_FIELDS = ("street", "district", "city", "state", "zip_code")
