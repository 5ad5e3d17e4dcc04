"""The Protheus schema as cobranca reads it: SE1 (títulos a receber) and SA1 (clientes).

Only the columns cobranca uses are declared. Conventions (see shared/protheus.md): physical
name = alias + company + "0"; deleted rows carry D_E_L_E_T_ = '*'; CHAR fields are space-padded;
dates are CHAR(8) YYYYMMDD or blank; money columns are often binary floats.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table

CENTS = Decimal("0.01")

# Types that are never collected (FINXTIPOS): advances, provisionals, credit notes, taxes...
NEVER_COLLECTED_TYPES = ("RA", "PR", "PA", "TX", "TXA", "NCC", "NDF")
# Abatement types have "-" in their third position (AB-, IR-, PI-, ...).
ABATEMENT_TYPE_PATTERN = "__-%"

LIVE = " "
DELETED = "*"


def physical_name(alias: str, company: str) -> str:
    """SE1 + company 01 → se1010.

    Names are declared in lower case, which SQLAlchemy renders unquoted: PostgreSQL then
    finds DBAccess's lower-case tables, Oracle its upper-case ones, SQL Server either.
    """
    return f"{alias}{company}0".lower()


def _column(name: str, *args: Any, **kwargs: Any) -> Column[Any]:
    """A column named in lower case in SQL, reached by its Protheus name in Python."""
    return Column(name.lower(), *args, key=name, **kwargs)


def se1_table(metadata: MetaData, company: str, schema: str | None = None) -> Table:
    return Table(
        physical_name("SE1", company),
        metadata,
        _column("E1_FILIAL", String(2), nullable=False),
        _column("E1_PREFIXO", String(3), nullable=False),
        _column("E1_NUM", String(9), nullable=False),
        _column("E1_PARCELA", String(2), nullable=False),
        _column("E1_TIPO", String(3), nullable=False),
        _column("E1_CLIENTE", String(6), nullable=False),
        _column("E1_LOJA", String(2), nullable=False),
        _column("E1_NOMCLI", String(20), nullable=False),
        _column("E1_EMISSAO", String(8), nullable=False),
        _column("E1_VENCTO", String(8), nullable=False),
        _column("E1_VENCREA", String(8), nullable=False),
        _column("E1_BAIXA", String(8), nullable=False),
        _column("E1_VALOR", Float, nullable=False),
        _column("E1_SALDO", Float, nullable=False),
        _column("E1_VALJUR", Float, nullable=False),
        _column("E1_PORCJUR", Float, nullable=False),
        _column("E1_MULTA", Float, nullable=False),
        _column("E1_JUROS", Float, nullable=False),
        _column("E1_SDACRES", Float, nullable=False),
        _column("E1_SDDECRE", Float, nullable=False),
        _column("E1_SITUACA", String(1), nullable=False),
        _column("E1_PORTADO", String(3), nullable=False),
        _column("E1_NUMBCO", String(15), nullable=False),
        _column("E1_CODBAR", String(44), nullable=False),
        _column("E1_CODDIG", String(48), nullable=False),
        _column("E1_MOEDA", Integer, nullable=False),
        _column("E1_HIST", String(40), nullable=False),
        _column("D_E_L_E_T_", String(1), nullable=False),
        _column("R_E_C_N_O_", Integer, primary_key=True, autoincrement=False),
        schema=schema,
    )


def sa1_table(metadata: MetaData, company: str, schema: str | None = None) -> Table:
    return Table(
        physical_name("SA1", company),
        metadata,
        _column("A1_FILIAL", String(2), nullable=False),
        _column("A1_COD", String(6), nullable=False),
        _column("A1_LOJA", String(2), nullable=False),
        _column("A1_NOME", String(40), nullable=False),
        _column("A1_NREDUZ", String(20), nullable=False),
        _column("A1_PESSOA", String(1), nullable=False),
        _column("A1_CGC", String(14), nullable=False),
        _column("A1_EMAIL", String(250), nullable=False),
        _column("A1_END", String(80), nullable=False),
        _column("A1_BAIRRO", String(40), nullable=False),
        _column("A1_MUN", String(60), nullable=False),
        _column("A1_EST", String(2), nullable=False),
        _column("A1_CEP", String(8), nullable=False),
        _column("A1_ENDCOB", String(80), nullable=False),
        _column("A1_BAIRROC", String(40), nullable=False),
        _column("A1_MUNC", String(60), nullable=False),
        _column("A1_ESTC", String(2), nullable=False),
        _column("A1_CEPC", String(8), nullable=False),
        _column("A1_MSBLQL", String(1), nullable=False),
        _column("A1_RISCO", String(1), nullable=False),
        _column("D_E_L_E_T_", String(1), nullable=False),
        _column("R_E_C_N_O_", Integer, primary_key=True, autoincrement=False),
        schema=schema,
    )


def parse_date(value: str | None) -> date | None:
    """YYYYMMDD → date; blank (spaces or empty) → None. Anything else raises ValueError."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not a Protheus date (YYYYMMDD): {value!r}")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError as exc:
        raise ValueError(f"not a valid date: {value!r} ({exc})") from None


def format_date(value: date | None) -> str:
    """date → YYYYMMDD; None → 8 spaces, as Protheus stores an empty date."""
    return value.strftime("%Y%m%d") if value else " " * 8


def to_money(value: object) -> Decimal:
    """A numeric column (often a binary float) → Decimal rounded half-up to cents.

    str() of a float is its shortest round-trip form, so 33.329999999999998 becomes 33.33
    before quantizing; no float ever reaches a total.
    """
    if value is None:
        return Decimal("0.00")
    if isinstance(value, Decimal):
        return value.quantize(CENTS, ROUND_HALF_UP)
    return Decimal(str(value)).quantize(CENTS, ROUND_HALF_UP)


RATE_PLACES = Decimal("0.000001")


def to_rate(value: object) -> Decimal:
    """A percentage column (E1_PORCJUR) → Decimal; six places keep any width installations use.

    Rates are not money: rounding them to cents would turn 0.0333 % a day into 0.03.
    """
    if value is None:
        return Decimal("0")
    text = str(value) if not isinstance(value, Decimal) else value
    return Decimal(text).quantize(RATE_PLACES, ROUND_HALF_UP).normalize()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def trimmed(value: str | None) -> str:
    """CHAR fields come space-padded to their width: compare trimmed values only.

    Control characters (NUL, CR/LF, ESC...) have no place in ERP text that ends up in a
    letter, a mail header or the history store (PostgreSQL refuses NUL): they become spaces.
    """
    return _CONTROL.sub(" ", value or "").strip()
