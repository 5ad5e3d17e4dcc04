"""Command-line value types shared by every command: dates and amounts as finance types them."""

from __future__ import annotations

import argparse
from datetime import date
from decimal import Decimal, InvalidOperation

from .protheus import CENTS

MAX_AMOUNT = Decimal("1e14")  # N16,2


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def amount(text: str) -> Decimal:
    """1234.50 (or 1234,50); never a float, at most two decimals."""
    cleaned = text.strip()
    if "," in cleaned and "." not in cleaned and cleaned.count(",") == 1:
        cleaned = cleaned.replace(",", ".")  # 1234,50 as finance types it
    try:
        value = Decimal(cleaned)
        good = value.is_finite() and 0 <= value < MAX_AMOUNT and value == value.quantize(CENTS)
    except InvalidOperation:
        good = False
    if not good:
        raise argparse.ArgumentTypeError(
            f"not an amount: {text!r} (write it like 1234.50: no thousands separator, "
            "at most two decimals)"
        )
    return value.quantize(CENTS)


def add_ignore_calendar(parser: argparse.ArgumentParser) -> None:
    """The one way past business days and the send window: an operator's explicit choice."""
    parser.add_argument(
        "--ignore-calendar",
        action="store_true",
        help="send even on a weekend, a holiday or outside the send window (config: calendar)",
    )
