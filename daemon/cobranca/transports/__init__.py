"""Where a finished message goes. One small interface, one implementation per transport.

A transport is a context manager: entering opens whatever connection it needs (once per run),
``send`` hands over one message, leaving closes it. The config's ``delivery.transport`` picks it.
Every failure is a DeliveryError whose ``kind`` tells the runner what may be done next.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from enum import StrEnum
from typing import Protocol, Self

from ..config import Delivery
from ..models import DeliveryReceipt


class Failure(StrEnum):
    TEMPORARY = "temporary"  # nothing was delivered; the same message may be tried again
    PERMANENT = "permanent"  # refused for good (5xx); trying again is pointless
    AMBIGUOUS = "ambiguous"  # the message data went out but no final answer came back
    CONNECTION = "connection"  # no usable connection (down, TLS, login): nothing was tried


class DeliveryError(Exception):
    def __init__(self, message: str, kind: Failure = Failure.TEMPORARY):
        super().__init__(message)
        self.kind = kind


class Transport(Protocol):
    name: str

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> DeliveryReceipt: ...

    def delivered(self, message_id: str) -> bool | None:
        """After a crash: True/False if this transport can tell, None if it cannot (SMTP)."""
        ...


def open_transport(delivery: Delivery) -> Transport:
    """The transport the config names (not yet connected: use it in a ``with`` block)."""
    if delivery.transport == "smtp":
        from .smtp import SmtpTransport

        assert delivery.smtp is not None  # guaranteed by the config schema
        return SmtpTransport(delivery.smtp, delivery.from_address)
    from .outbox import OutboxTransport

    return OutboxTransport(delivery.outbox.directory)
