"""Plain data passed between the stages: source → plan → render → deliver → history.

Every stage takes and returns these frozen dataclasses, never ORM rows or config dicts, so
that each stage can be tested alone and none reaches around another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

_T = TypeVar("_T")


def trusted(cls: type[_T], fields: dict[str, Any]) -> _T:
    """An instance of one of these frozen dataclasses from values already checked and typed.

    The hot loops' fast path (the source's rows, the plan's letters): the dict becomes the
    instance's attributes at once, instead of __init__'s object.__setattr__ field by field.
    ``fields`` must hold every field, defaults included (tests/test_source_batch.py checks).
    """
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance


@dataclass(frozen=True)
class Address:
    street: str
    district: str
    city: str
    state: str
    zip_code: str


@dataclass(frozen=True)
class Customer:
    """A Protheus customer (SA1), identified by code + store."""

    code: str
    store: str
    name: str
    short_name: str
    tax_id: str
    person_type: str
    raw_emails: str
    address: Address
    blocked: bool

    @property
    def key(self) -> str:
        return f"{self.code}/{self.store}"


@dataclass(frozen=True)
class Title:
    """An open título (SE1 row), with balances already in Decimal and dates parsed."""

    branch: str
    prefix: str
    number: str
    installment: str
    type: str
    customer_code: str
    customer_store: str
    issue_date: date | None
    due_date: date | None
    real_due_date: date
    value: Decimal
    balance: Decimal
    abatements: Decimal
    situation: str
    days_from_due: int
    days_late: int
    recno: int = 0  # SE1's R_E_C_N_O_: re-reads a título by its primary key
    interest_rate: Decimal = Decimal("0")  # E1_PORCJUR: % per day late (0: none in the título)
    interest_per_day: Decimal = Decimal("0.00")  # E1_VALJUR: R$ per day late
    additions: Decimal = Decimal("0.00")  # E1_SDACRES: balance of additions
    deductions: Decimal = Decimal("0.00")  # E1_SDDECRE: balance of deductions
    typeable_line: str = ""  # E1_CODDIG as stored (boleto line, sometimes the barcode)
    barcode: str = ""  # E1_CODBAR as stored

    @property
    def key(self) -> str:
        """The Protheus key string that links history to a título."""
        return "|".join(
            (
                self.branch,
                self.prefix,
                self.number,
                self.installment,
                self.type,
                self.customer_code,
                self.customer_store,
            )
        )

    @property
    def net_balance(self) -> Decimal:
        """What is still owed: balance minus abatement títulos (never below zero)."""
        return max(self.balance - self.abatements, Decimal("0.00"))

    @property
    def overdue(self) -> bool:
        """Overdue as the Protheus letter counts it: real due date before the reference date."""
        return self.days_from_due > 0


@dataclass(frozen=True)
class CustomerTitles:
    """One customer with the títulos a layout's selection picked for it, in due-date order.

    ``rejected`` holds (título key, reason) for rows the source could not read (a bad date,
    say): they are reported, and never stop the other títulos or customers.
    """

    customer: Customer
    titles: tuple[Title, ...]
    rejected: tuple[tuple[str, str], ...] = ()


class Disposition(StrEnum):
    """What the plan decided for one customer of one layout."""

    SEND = "send"
    PRINT = "print"  # no usable e-mail: the letter must go on paper
    SKIP = "skip"


@dataclass(frozen=True)
class PlannedLetter:
    layout: str
    as_of: date
    customer: Customer
    titles: tuple[Title, ...]
    recipients: tuple[str, ...]
    disposition: Disposition
    reason: str = ""
    invalid_emails: tuple[str, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()  # (título key, why it is left out)

    @property
    def overdue(self) -> tuple[Title, ...]:
        return tuple(t for t in self.titles if t.overdue)

    @property
    def coming_due(self) -> tuple[Title, ...]:
        return tuple(t for t in self.titles if not t.overdue)

    @property
    def total(self) -> Decimal:
        return sum((t.net_balance for t in self.titles), Decimal("0.00"))


@dataclass(frozen=True)
class RenderedLetter:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class InlineImage:
    """A PNG shown inside a letter's HTML by ``<img src="cid:CONTENT_ID">`` (the Pix QR code)."""

    content_id: str  # without the angle brackets
    content: bytes
    filename: str

    @property
    def src(self) -> str:
        return f"cid:{self.content_id}"


@dataclass(frozen=True)
class DeliveryReceipt:
    """What a transport reports about one message it accepted (``refused``: per address)."""

    transport: str
    detail: str = ""
    refused: dict[str, str] = field(default_factory=dict)


class LetterStatus(StrEnum):
    """A letter's life: planned → sending → sent | failed_* | ambiguous (or skipped/print).

    ``ambiguous`` means the SMTP transaction may or may not have completed (the process died, or
    the connection broke after the message data was sent): it is never resent automatically.
    """

    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    FAILED_TEMPORARY = "failed_temporary"
    FAILED_PERMANENT = "failed_permanent"
    AMBIGUOUS = "ambiguous"
    PRINT_NEEDED = "print_needed"
    PRINTED = "printed"
    SKIPPED = "skipped"


# Statuses that count as "this customer already got (or is getting) this layout" for cadence.
CADENCE_STATUSES = (
    LetterStatus.PLANNED,
    LetterStatus.SENDING,
    LetterStatus.SENT,
    LetterStatus.AMBIGUOUS,
    LetterStatus.PRINT_NEEDED,
    LetterStatus.PRINTED,
    LetterStatus.FAILED_PERMANENT,
)
