"""Send through an SMTP server, one connection reused for the whole run.

yagmail opens and authenticates the connection (STARTTLS or implicit TLS, always verifying the
certificate). The transaction itself (MAIL, RCPT, DATA) is driven step by step here, because
what may be retried depends on where it broke: before the message data went out nothing was
delivered (temporary); after it, without the server's final reply, the letter may or may not
have arrived (ambiguous), and it must never be sent again automatically.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
from typing import Self

import yagmail

from ..config import Smtp
from ..mail import OutgoingMessage
from ..models import DeliveryReceipt
from . import DeliveryError, Failure

_LEADING_DOT = re.compile(rb"(?m)^\.")
_CONNECTION_ERRORS = (smtplib.SMTPServerDisconnected, OSError)


class SmtpTransport:
    name = "smtp"
    batch_size = 1  # nobody can tell after a crash whether a letter went out: one at a time

    def __init__(self, settings: Smtp, from_address: str):
        self.settings = settings
        self.from_address = from_address
        self._client: yagmail.SMTP | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._disconnect()

    def delivered(self, message_id: str) -> None:
        """SMTP cannot be asked whether a message arrived."""
        return None

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        password = settings.password()
        # A one-entry dict keeps yagmail from appending "@gmail.com" to a bare user name.
        user = settings.username or self.from_address
        # Certificates are always verified (yagmail's default STARTTLS does not verify).
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
        extra: dict[str, object] = {"timeout": settings.timeout_seconds}
        if settings.security == "tls":
            extra["context"] = context
        try:
            client = yagmail.SMTP(
                user={user: user},
                password=password,
                host=settings.host,
                port=settings.port,
                smtp_starttls={"context": context} if settings.security == "starttls" else False,
                smtp_ssl=settings.security == "tls",
                smtp_skip_login=not settings.username,
                soft_email_validation=False,
                **extra,
            )
            client.login()
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"cannot connect to SMTP {settings.host}:{settings.port}: {_describe(exc)}",
                Failure.CONNECTION,
            ) from None
        self._client = client
        return client.smtp

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.smtp is not None:
            try:
                client.smtp.quit()
            except (smtplib.SMTPException, OSError):
                client.smtp.close()

    def send(self, message: OutgoingMessage) -> DeliveryReceipt:
        """One SMTP transaction; on a connection error the next send reconnects."""
        smtp = self._client.smtp if self._client is not None else self._connect()
        try:
            return self._transaction(smtp, message)
        except DeliveryError as exc:
            # After anything but a clean 5xx refusal the connection is suspect (a 421 closes
            # it): the next try starts on a new one.
            if exc.kind is not Failure.PERMANENT:
                self._drop()
            raise

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.smtp is not None:
            client.smtp.close()

    def flush(self) -> None:
        """Nothing to do: the server's 250 after the data already made each message final."""

    def _transaction(self, smtp: smtplib.SMTP, message: OutgoingMessage) -> DeliveryReceipt:
        data, recipients = message.data, message.recipients
        try:
            smtp.ehlo_or_helo_if_needed()
            code, reply = smtp.mail(self.from_address)
            if code != 250:
                raise _refused(smtp, "sender refused", code, reply)
            refused: dict[str, tuple[int, bytes]] = {}
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = (code, reply)
            if len(refused) == len(recipients):
                smtp.rset()
                kind = (
                    Failure.PERMANENT
                    if all(c >= 500 for c, _ in refused.values())
                    else Failure.TEMPORARY
                )
                reasons = {rcpt: _reply(c, r) for rcpt, (c, r) in refused.items()}
                raise DeliveryError(f"all recipients refused: {reasons}", kind)
            code, reply = smtp.docmd("DATA")
            if code != 354:
                raise _refused(smtp, "DATA refused", code, reply)
        except _CONNECTION_ERRORS as exc:
            # The server answered before; losing it before the data is a temporary failure.
            reason = f"SMTP connection lost before the message data: {_describe(exc)}"
            raise DeliveryError(reason, Failure.TEMPORARY) from None
        # From here on the server may have the message: any break is ambiguous.
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            smtp.send(_LEADING_DOT.sub(b"..", data) + b".\r\n")
            code, reply = smtp.getreply()
        except _CONNECTION_ERRORS as exc:
            raise DeliveryError(
                f"connection lost after the message data was sent: {_describe(exc)}",
                Failure.AMBIGUOUS,
            ) from None
        if code != 250:
            kind = Failure.PERMANENT if code >= 500 else Failure.TEMPORARY
            raise DeliveryError(f"message refused: {_reply(code, reply)}", kind)
        return DeliveryReceipt(
            transport=self.name,
            detail=_reply(code, reply),
            refused={rcpt: _reply(c, r) for rcpt, (c, r) in refused.items()},
        )


def _refused(smtp: smtplib.SMTP, what: str, code: int, reply: bytes) -> DeliveryError:
    with contextlib.suppress(*_CONNECTION_ERRORS):
        smtp.rset()
    kind = Failure.PERMANENT if code >= 500 else Failure.TEMPORARY
    return DeliveryError(f"{what}: {_reply(code, reply)}", kind)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
