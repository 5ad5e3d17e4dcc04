"""Read open títulos and their customers from the Protheus database (SE1 + SA1), read only.

Selection happens in SQL with bound parameters; rows are streamed in customer order and grouped
one customer at a time, so memory stays flat however large SE1 is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from typing import Any, Protocol

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


class TitleSource(Protocol):
    """Where títulos come from. One implementation today (Protheus SQL); tests may add more."""

    def customers_titles(
        self, selection: Selection, as_of: date, customers: Sequence[str] = ()
    ) -> Iterator[CustomerTitles]: ...

    def close(self) -> None: ...


class SourceError(Exception):
    """The ERP database could not be read; the message never contains a password."""


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
        statement = self.statement(selection, as_of, customers, recnos)
        with self.engine.connect() as connection:
            result = connection.execution_options(
                stream_results=True, yield_per=self.config.fetch_size
            ).execute(statement)
            for _, rows in itertools.groupby(result, key=lambda r: (r.E1_CLIENTE, r.E1_LOJA)):
                yield self._group(list(rows), as_of)

    def reread(self, selection: Selection, as_of: date, recnos: Sequence[int]) -> CustomerTitles:
        """A planned letter's títulos as they are now (an empty group when all were paid)."""
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
            c.E1_SITUACA, c.R_E_C_N_O_,
            a.A1_NOME, a.A1_NREDUZ, a.A1_PESSOA, a.A1_CGC, a.A1_EMAIL, a.A1_END, a.A1_BAIRRO,
            a.A1_MUN, a.A1_EST, a.A1_CEP, a.A1_ENDCOB, a.A1_BAIRROC, a.A1_MUNC, a.A1_ESTC,
            a.A1_CEPC, a.A1_MSBLQL,
        ]  # fmt: skip
        labelled = [column.label(column.key) for column in columns]
        return (
            select(*labelled, self._abatement_sum().label("abatements"))
            .select_from(se1.join(sa1, join_on))
            .where(*self._conditions(selection, as_of, customers, recnos))
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

    def _conditions(
        self,
        selection: Selection,
        as_of: date,
        customers: Sequence[str],
        recnos: Sequence[int],
    ) -> list[ColumnElement[bool]]:
        c, a = self.se1.c, self.sa1.c
        window: list[ColumnElement[bool]] = [c.E1_VENCREA >= _FIRST_DATE]
        if selection.days.max is not None:
            earliest = as_of - timedelta(days=selection.days.max)
            window.append(c.E1_VENCREA >= protheus.format_date(earliest))
        if selection.days.min is not None:
            latest = as_of - timedelta(days=selection.days.min)
            window.append(c.E1_VENCREA <= protheus.format_date(latest))
        conditions: list[ColumnElement[bool]] = [
            c.D_E_L_E_T_ != protheus.DELETED,
            # Open títulos whose gross balance can reach the minimum (gross ≥ net, so this only
            # prefilters; half a cent of slack keeps a float saldo such as 133.32999… that is
            # worth R$ 133,33; the exact test is on the net balance). Negative balances are
            # read too, to be reported as bad data rather than silently ignored.
            or_(
                c.E1_SALDO < 0,
                and_(c.E1_SALDO > 0, c.E1_SALDO >= float(selection.min_balance) - 0.005),
            ),
            not_(c.E1_TIPO.like(protheus.ABATEMENT_TYPE_PATTERN)),
            func.rtrim(c.E1_TIPO).not_in(protheus.NEVER_COLLECTED_TYPES),
            # In the layout's window of real due dates; a blank due date is read to be reported.
            or_(and_(*window), c.E1_VENCREA < _FIRST_DATE, c.E1_VENCREA > _LAST_DATE),
        ]
        if recnos:
            conditions.append(c.R_E_C_N_O_.in_(recnos))
        if selection.branches:
            conditions.append(func.rtrim(c.E1_FILIAL).in_(selection.branches))
        if selection.types.include:
            conditions.append(func.rtrim(c.E1_TIPO).in_(selection.types.include))
        if selection.types.exclude:
            conditions.append(func.rtrim(c.E1_TIPO).not_in(selection.types.exclude))
        if selection.situations:
            conditions.append(func.rtrim(c.E1_SITUACA).in_(selection.situations))
        if selection.customers.include:
            conditions.append(self._customer_match(selection.customers.include))
        if selection.customers.exclude:
            conditions.append(not_(self._customer_match(selection.customers.exclude)))
        if customers:
            conditions.append(self._customer_match(customers))
        if selection.skip_blocked:
            conditions.append(a.A1_MSBLQL != "1")
        return conditions

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
