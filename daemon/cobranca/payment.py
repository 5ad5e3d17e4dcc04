"""What a letter asks for and how it can be paid: charges to its date, boleto lines, Pix.

Between plan and render: a planned letter's títulos become amounts brought up to the as-of
date (fine, interest, additions, deductions, TOTAL, as Protheus computes them) and the ways to
pay the layout offers. Nothing here touches a database or a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property, lru_cache

from .boleto import Boleto, BoletoError, boleto_from_title
from .charges import ChargeTotals, TitleCharges, title_charges, totals
from .config import Creditor, Layout
from .models import PlannedLetter, Title
from .pix import PixError, PixReceiver, brcode, parse_brcode, pix_receiver, qr_png, sanitize_txid


@dataclass(frozen=True)
class TitlePayment:
    """One título as the letter shows it: its charges and, when valid, its boleto."""

    title: Title
    charges: TitleCharges
    boleto: Boleto | None


@dataclass(frozen=True)
class PixOffer:
    """A static Pix code for the letter's total and its QR code (PNG)."""

    payload: str
    amount: Decimal
    txid: str
    qr_png: bytes


@dataclass(frozen=True)
class LetterPayment:
    titles: tuple[TitlePayment, ...]
    pix: PixOffer | None
    # (título key, what is wrong): shown to the operator, never printed in the letter.
    problems: tuple[tuple[str, str], ...] = ()

    # The sums are asked for several times per letter (context, Pix amount): computed once.
    def _sum(self, overdue: bool | None) -> ChargeTotals:
        return totals(
            p.charges for p in self.titles if overdue is None or p.title.overdue == overdue
        )

    @cached_property
    def overdue(self) -> ChargeTotals:
        return self._sum(True)

    @cached_property
    def coming_due(self) -> ChargeTotals:
        return self._sum(False)

    @cached_property
    def all(self) -> ChargeTotals:
        return self._sum(None)


@lru_cache(maxsize=8)
def _receiver(key: str, name: str, city: str) -> PixReceiver:
    """The config's receiver, validated once rather than for every letter."""
    return pix_receiver(key, name, city)


def pix_txid(letter: PlannedLetter) -> str:
    """Customer and date in the code, so finance can match a Pix received to its letter."""
    customer = letter.customer
    return f"{customer.code}{customer.store}D{letter.as_of:%y%m%d}"


def letter_payment(letter: PlannedLetter, layout: Layout, creditor: Creditor) -> LetterPayment:
    """Charges per título and the ways to pay the layout offers (boleto lines, Pix)."""
    rules = layout.charges.rules
    problems: list[tuple[str, str]] = []
    titles = []
    for title in letter.titles:
        boleto = None
        if layout.payment.boleto:
            try:
                boleto = boleto_from_title(title.typeable_line, title.barcode)
            except BoletoError as exc:
                problems.append((title.key, f"boleto left out of the letter: {exc}"))
        charges = title_charges(title, letter.customer.person_type, rules)
        titles.append(TitlePayment(title, charges, boleto))
    payment = LetterPayment(tuple(titles), None, tuple(problems))
    if not (layout.payment.pix and creditor.pix):
        return payment
    amount = payment.all.total
    if amount <= 0:
        return payment
    txid = pix_txid(letter)
    try:
        pix = creditor.pix
        payload = brcode(
            _receiver(pix.key, pix.merchant_name, pix.merchant_city), amount, txid=txid
        )
        parse_brcode(payload)  # self-check: a code that does not read back never goes out
    except PixError as exc:
        problems.append(("", f"Pix code left out of the letter: {exc}"))
        return LetterPayment(payment.titles, None, tuple(problems))
    offer = PixOffer(payload, amount, sanitize_txid(txid), qr_png(payload))
    return LetterPayment(payment.titles, offer, tuple(problems))
