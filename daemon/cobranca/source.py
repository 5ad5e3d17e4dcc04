"""Read open títulos and their customers from the Protheus database (SE1 + SA1), read only.

Selection happens in SQL with bound parameters; rows are streamed in customer order and grouped
one customer at a time, so memory stays flat however large SE1 is.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    ColumnElement,
    MetaData,
    Select,
    and_,
    create_engine,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Engine, Row

from . import protheus
from .config import Selection
from .config import Source as SourceConfig
from .models import Address, Customer, CustomerTitles, Title


class SourceError(Exception):
    """The ERP database could not be read; the message never contains a password."""


_CUSTOMER_KEY = re.compile(r"[^/\s]+(/[^/\s]+)?")
_KEY_PARTS = ("E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA", "E1_TIPO", "E1_CLIENTE", "E1_LOJA")
MAX_FILTER_DAYS = 36_500  # as the config's day windows: wider is a typo, and overflows dates
NOTHING_OWED = "nothing owed after abatements"


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

    def close(self) -> None:
        self.engine.dispose()

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
            for _, rows in itertools.groupby(result, key=lambda r: (r.E1_CLIENTE, r.E1_LOJA)):
                yield self._group(list(rows), as_of)

    def reread(self, selection: Selection, as_of: date, recnos: Sequence[int]) -> CustomerTitles:
        """A planned letter's títulos as they are now (an empty group when all were paid)."""
        if not recnos:
            return CustomerTitles(customer=None, titles=())  # type: ignore[arg-type]
        groups = list(self.customers_titles(selection, as_of, recnos=recnos))
        if not groups:
            return CustomerTitles(customer=None, titles=())  # type: ignore[arg-type]
        return groups[0]

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
        if not self.config.customers_shared:
            join_on = and_(join_on, a.A1_FILIAL == c.E1_FILIAL)
        columns = [
            c.E1_FILIAL, c.E1_PREFIXO, c.E1_NUM, c.E1_PARCELA, c.E1_TIPO, c.E1_CLIENTE,
            c.E1_LOJA, c.E1_EMISSAO, c.E1_VENCTO, c.E1_VENCREA, c.E1_VALOR, c.E1_SALDO,
            c.E1_SITUACA, c.E1_PORCJUR, c.E1_VALJUR, c.E1_SDACRES, c.E1_SDDECRE, c.E1_CODDIG,
            c.E1_CODBAR, c.R_E_C_N_O_,
            a.A1_NOME, a.A1_NREDUZ, a.A1_PESSOA, a.A1_CGC, a.A1_EMAIL, a.A1_END, a.A1_BAIRRO,
            a.A1_MUN, a.A1_EST, a.A1_CEP, a.A1_ENDCOB, a.A1_BAIRROC, a.A1_MUNC, a.A1_ESTC,
            a.A1_CEPC, a.A1_MSBLQL,
        ]  # fmt: skip
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
        recnos: Sequence[int],
    ) -> list[ColumnElement[bool]]:
        c, a = self.se1.c, self.sa1.c
        days = selection.days
        earliest = as_of - timedelta(days=days.max) if days.max is not None else None
        latest = as_of - timedelta(days=days.min) if days.min is not None else None
        conditions = self._open_conditions(selection.min_balance, earliest, latest)
        if recnos:
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

    def _group(self, rows: list[Row[Any]], as_of: date) -> CustomerTitles:
        titles: list[Title] = []
        rejected: list[tuple[str, str]] = []
        for row in rows:
            try:
                titles.append(title_from_row(row, as_of, self.config.collectible_types))
            except ValueError as exc:
                rejected.append((_row_key(row), str(exc)))
        return CustomerTitles(
            customer=customer_from_row(rows[0]), titles=tuple(titles), rejected=tuple(rejected)
        )


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
    return "|".join(
        protheus.trimmed(getattr(row, name))
        for name in (
            "E1_FILIAL", "E1_PREFIXO", "E1_NUM", "E1_PARCELA", "E1_TIPO", "E1_CLIENTE", "E1_LOJA"
        )
    )  # fmt: skip


def days_late(as_of: date, due: date | None, real_due: date) -> int:
    """As Protheus counts: from E1_VENCTO, but zero while as_of is on or before E1_VENCREA."""
    if as_of <= real_due:
        return 0
    return (as_of - (due or real_due)).days


def _date_field(row: Row[Any], name: str) -> date | None:
    try:
        return protheus.parse_date(getattr(row, name))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def title_from_row(row: Row[Any], as_of: date, collectible_types: Sequence[str]) -> Title:
    """One SE1 row as a Title, or ValueError saying which field makes it unusable."""
    t = protheus.trimmed
    if t(row.E1_TIPO) not in collectible_types:
        raise ValueError(
            f"E1_TIPO: type {t(row.E1_TIPO)!r} is not a known collectible type "
            "(add it to source.collectible_types if it should be collected)"
        )
    balance = protheus.to_money(row.E1_SALDO)
    if balance < 0:
        raise ValueError(f"E1_SALDO: negative balance ({balance})")
    charges = {
        "E1_PORCJUR": protheus.to_rate(row.E1_PORCJUR),
        "E1_VALJUR": protheus.to_money(row.E1_VALJUR),
        "E1_SDACRES": protheus.to_money(row.E1_SDACRES),
        "E1_SDDECRE": protheus.to_money(row.E1_SDDECRE),
    }
    for name, amount in charges.items():
        if amount < 0:
            raise ValueError(f"{name}: negative value ({amount}): the letter would be wrong")
    real_due = _date_field(row, "E1_VENCREA")
    if real_due is None:
        raise ValueError("real due date (E1_VENCREA) is blank")
    if protheus.format_date(real_due) > _LAST_DATE:
        raise ValueError(f"E1_VENCREA: implausible date {real_due.isoformat()}")
    due = _date_field(row, "E1_VENCTO")
    return Title(
        branch=t(row.E1_FILIAL),
        prefix=t(row.E1_PREFIXO),
        number=t(row.E1_NUM),
        installment=t(row.E1_PARCELA),
        type=t(row.E1_TIPO),
        customer_code=t(row.E1_CLIENTE),
        customer_store=t(row.E1_LOJA),
        issue_date=_date_field(row, "E1_EMISSAO"),
        due_date=due,
        real_due_date=real_due,
        value=protheus.to_money(row.E1_VALOR),
        balance=balance,
        abatements=protheus.to_money(row.abatements),
        situation=t(row.E1_SITUACA),
        days_from_due=(as_of - real_due).days,
        days_late=days_late(as_of, due, real_due),
        recno=int(row.R_E_C_N_O_),
        interest_rate=charges["E1_PORCJUR"],
        interest_per_day=charges["E1_VALJUR"],
        additions=charges["E1_SDACRES"],
        deductions=charges["E1_SDDECRE"],
        typeable_line=t(row.E1_CODDIG),
        barcode=t(row.E1_CODBAR),
    )


def customer_from_row(row: Row[Any]) -> Customer:
    t = protheus.trimmed
    billing = (row.A1_ENDCOB, row.A1_BAIRROC, row.A1_MUNC, row.A1_ESTC, row.A1_CEPC)
    main = (row.A1_END, row.A1_BAIRRO, row.A1_MUN, row.A1_EST, row.A1_CEP)
    # The billing address is used only when all five of its fields are filled (FINR811A).
    chosen = billing if all(t(v) for v in billing) else main
    return Customer(
        code=t(row.E1_CLIENTE),
        store=t(row.E1_LOJA),
        name=t(row.A1_NOME),
        short_name=t(row.A1_NREDUZ),
        tax_id=t(row.A1_CGC),
        person_type=t(row.A1_PESSOA),
        raw_emails=t(row.A1_EMAIL),
        address=Address(*(t(v) for v in chosen)),
        blocked=t(row.A1_MSBLQL) == "1",
    )
