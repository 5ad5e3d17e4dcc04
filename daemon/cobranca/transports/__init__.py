"""Where a finished message goes. One small interface, one implementation per transport.

A transport is a context manager: entering opens whatever connection it needs (once per run),
``send`` hands over one message, leaving closes it. The config's ``delivery.transport`` picks it.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol, Self

from ..config import Delivery
from ..models import DeliveryReceipt


class DeliveryError(Exception):
    """A message was not accepted. ``permanent`` means retrying the same message is pointless."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Transport(Protocol):
    name: str

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def send(self, message: EmailMessage) -> DeliveryReceipt: ...


def open_transport(delivery: Delivery) -> Transport:
    """The transport the config names (not yet connected: use it in a ``with`` block)."""
    if delivery.transport == "smtp":
        from .smtp import SmtpTransport

        assert delivery.smtp is not None  # guaranteed by the config schema
        return SmtpTransport(delivery.smtp, delivery.from_address)
    from .outbox import OutboxTransport

    return OutboxTransport(delivery.outbox.directory)
