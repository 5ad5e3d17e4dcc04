"""Where a finished message goes. One small interface, one implementation per transport.

A transport is a context manager: entering opens whatever connection it needs (once per run),
``send`` hands over one message, ``flush`` makes what was handed over final, leaving closes it.
The config's ``delivery.transport`` picks it. Every failure is a DeliveryError whose ``kind``
tells the runner what may be done next.

``batch_size`` is how many letters the runner may claim at once: a transport that can tell
after a crash whether each letter went out (the outbox's files) lets the runner claim and
record many per transaction; one that cannot (SMTP) takes them one by one, so a crash leaves
at most one letter in doubt.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, Self

from ..config import Delivery
from ..mail import OutgoingMessage
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


class FlushError(DeliveryError):
    """Messages handed over since the last flush that did not become final."""

    def __init__(self, message: str, undelivered: frozenset[str]):
        super().__init__(message, Failure.TEMPORARY)
        self.undelivered = undelivered  # their Message-IDs


class Transport(Protocol):
    name: str
    batch_size: int

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def send(self, message: OutgoingMessage) -> DeliveryReceipt: ...

    def flush(self) -> None:
        """Make every message sent since the last flush final; FlushError names those that
        are not. The runner records letters as sent only after this returns."""
        ...

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

    return OutboxTransport(delivery.outbox.directory, delivery.outbox.batch_size)
