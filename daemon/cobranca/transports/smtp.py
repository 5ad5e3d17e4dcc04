"""Send through an SMTP server, one connection reused for the whole run.

yagmail opens and authenticates the connection (STARTTLS with a verifying SSL context, or
implicit TLS); messages are handed to that connection with ``send_message`` so yagmail's HTML
rewriting and Message-ID scheme never touch a letter. Errors are mapped to DeliveryError with
the server's reply, never a password.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Self

import yagmail

from ..config import Smtp
from ..models import DeliveryReceipt
from . import DeliveryError


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: Smtp, from_address: str):
        self.settings = settings
        self.from_address = from_address
        self._client: yagmail.SMTP | None = None

    def __enter__(self) -> Self:
        self._connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._disconnect()

    def _connect(self) -> None:
        settings = self.settings
        password = settings.password()
        # A one-entry dict keeps yagmail from appending "@gmail.com" to a bare user name.
        user = settings.username or self.from_address
        # Certificates are always verified (yagmail's default STARTTLS does not verify).
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
        starttls: bool | dict[str, ssl.SSLContext] = False
        if settings.security == "starttls":
            starttls = {"context": context}
        extra: dict[str, object] = {"timeout": settings.timeout_seconds}
        if settings.security == "tls":
            extra["context"] = context
        try:
            client = yagmail.SMTP(
                user={user: user},
                password=password,
                host=settings.host,
                port=settings.port,
                smtp_starttls=starttls,
                smtp_ssl=settings.security == "tls",
                smtp_skip_login=not settings.username,
                soft_email_validation=False,
                **extra,
            )
            client.login()
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"cannot connect to SMTP {settings.host}:{settings.port}: {_describe(exc)}",
                permanent=isinstance(exc, smtplib.SMTPAuthenticationError),
            ) from None
        self._client = client

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.smtp is not None:
            try:
                client.smtp.quit()
            except (smtplib.SMTPException, OSError):
                client.smtp.close()

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        """Send one message; reconnect once if the server dropped an idle connection."""
        if self._client is None:
            self._connect()
        try:
            return self._send_once(message)
        except smtplib.SMTPServerDisconnected:
            self._disconnect()
            self._connect()
            return self._send_once(message)

    def _send_once(self, message: EmailMessage) -> DeliveryReceipt:
        assert self._client is not None
        try:
            refused = self._client.smtp.send_message(message, from_addr=self.from_address)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            reasons = {rcpt: _reply(code, text) for rcpt, (code, text) in exc.recipients.items()}
            permanent = all(code >= 500 for code, _ in exc.recipients.values())
            raise DeliveryError(f"all recipients refused: {reasons}", permanent=permanent) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"server refused the message: {_reply(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP error: {_describe(exc)}") from None
        reasons = {rcpt: _reply(code, text) for rcpt, (code, text) in refused.items()}
        return DeliveryReceipt(transport=self.name, detail="accepted", refused=reasons)


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
