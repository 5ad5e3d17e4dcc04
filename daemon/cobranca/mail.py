"""Build the MIME message of a letter, headers safe by construction, serialised once.

Recipients come only from validated plain addresses and the subject is already one line, so ERP
text can never add a header. yagmail is kept for the connection only: its own message builder
rewrites HTML and derives Message-IDs from the subject (see shared/libraries.md).

Every header (the message's and each part's) is made and folded by the standard library's
``email`` package. The bodies are encoded with ``binascii`` and joined here: the package's own
pure-Python quoted-printable encoder and generator cost more than the rest of a letter's
delivery together (bench/README.md).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from .config import Delivery
from .models import InlineImage, RenderedLetter

CRLF = b"\r\n"


@dataclass(frozen=True)
class OutgoingMessage:
    """A finished message, serialised once: the transport sends these bytes, the history
    keeps them, so the stored copy is exactly what went out."""

    message_id: str
    recipients: tuple[str, ...]
    data: bytes  # CRLF line ends, 7-bit (every part is quoted-printable or base64)

    @property
    def text(self) -> str:
        return self.data.decode("ascii")


def serialize(message: EmailMessage, recipients: Sequence[str]) -> OutgoingMessage:
    """Any other message (the operator's alerts) as the transports take it."""
    return OutgoingMessage(
        str(message["Message-ID"]), tuple(recipients), message.as_bytes(policy=SMTP)
    )


def new_message_id(delivery: Delivery) -> str:
    """Generated before sending and stored, so the letter can be found in the server's logs."""
    return make_msgid(idstring="cobranca", domain=delivery.from_address.rsplit("@", 1)[1])


def build_message(
    rendered: RenderedLetter,
    recipients: Sequence[str],
    delivery: Delivery,
    message_id: str,
    sent_at: datetime,
    layout: str,
    attachments: Sequence[tuple[str, bytes]] = (),
    inline_images: Sequence[InlineImage] = (),
) -> OutgoingMessage:
    """multipart/alternative (text + HTML), inside multipart/mixed when PDFs are attached.

    Inline images (the Pix QR code) go in a multipart/related around the HTML, each with the
    Content-ID the HTML names in ``src="cid:…"``: Gmail and Outlook do not show data: images.
    Text is quoted-printable, which keeps the stored copy readable by a person.
    """
    html = _text(rendered.html, "html")
    if inline_images:
        html = _multipart("related", [html, *(_image(image) for image in inline_images)])
    body = _multipart("alternative", [_text(rendered.text, "plain"), html])
    if attachments:
        pdfs = [_attachment(name, content) for name, content in attachments]
        body = _multipart("mixed", [body, *pdfs])
    local, domain = delivery.from_address.rsplit("@", 1)
    sender = Address(display_name=delivery.from_name, username=local, domain=domain)
    top: list[tuple[str, str, tuple[tuple[str, str], ...]]] = [
        ("From", str(sender), ()),
        ("To", ", ".join(recipients), ()),
    ]
    if delivery.reply_to:
        top.append(("Reply-To", delivery.reply_to, ()))
    top += [
        ("Subject", rendered.subject, ()),
        ("Date", format_datetime(sent_at), ()),
        ("Message-ID", message_id, ()),
        ("Auto-Submitted", "auto-generated", ()),
        ("X-Cobranca-Layout", layout, ()),
        ("MIME-Version", "1.0", ()),
    ]
    headers, content = body
    block = b"".join(_header(*header) for header in (*top, *headers))
    return OutgoingMessage(message_id, tuple(recipients), block + CRLF + content)


_Headers = tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]  # name, value, params
_Part = tuple[_Headers, bytes]


class _HeaderClasses(HeaderRegistry):
    """The standard registry, but each header class made once: the stock one builds a new
    class on every lookup, which was a third of a letter's message building."""

    @functools.lru_cache(maxsize=128)  # noqa: B019 -- one registry for the process
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


POLICY = SMTP.clone(header_factory=_HeaderClasses())


def _text(text: str, subtype: str) -> _Part:
    headers: _Headers = (
        ("Content-Type", f"text/{subtype}", (("charset", "utf-8"),)),
        ("Content-Transfer-Encoding", "quoted-printable", ()),
    )
    return headers, quoted_printable(text)


_QP_LINES: dict[bytes, bytes] = {}
_QP_LINES_LIMIT = 2048  # cleared when full (~40 letters): the template lines are back after one


def quoted_printable(text: str) -> bytes:
    """UTF-8 ``text`` as quoted-printable body lines ending in CRLF (none after the last).

    CRLF, CR and LF all end a line (a bare CR must never reach an SMTP server). Each line is
    binascii's encoding of it, remembered: quoted-printable encodes line by line (RFC 2045
    §6.7), and a letter's HTML is some 200 lines of which all but ~30 are the template's, the
    same in every letter: a quarter less time than binascii on the whole body (bench/README.md).
    """
    lines = _QP_LINES
    encoded: list[bytes] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8").split(b"\n"):
        done = lines.get(line)
        if done is None:
            qp = binascii.b2a_qp(line, quotetabs=False, istext=True, header=False)
            done = qp.replace(b"\n", CRLF)  # its soft line breaks
            if len(lines) >= _QP_LINES_LIMIT:
                lines.clear()
            lines[line] = done
        encoded.append(done)
    return CRLF.join(encoded)


def _image(image: InlineImage) -> _Part:
    headers: _Headers = (
        ("Content-Type", "image/png", ()),
        ("Content-Transfer-Encoding", "base64", ()),
        ("Content-Disposition", "inline", (("filename", image.filename),)),
        ("Content-ID", f"<{image.content_id}>", ()),
    )
    return headers, _base64(image.content)


def _attachment(filename: str, content: bytes) -> _Part:
    headers: _Headers = (
        ("Content-Type", "application/pdf", ()),
        ("Content-Transfer-Encoding", "base64", ()),
        ("Content-Disposition", "attachment", (("filename", filename),)),
    )
    return headers, _base64(content)


def _base64(content: bytes) -> bytes:
    return base64.encodebytes(content).replace(b"\n", CRLF)


def _serialize_part(part: _Part) -> bytes:
    """One body part: its headers, a blank line, its data."""
    headers, content = part
    return b"".join(_header(*header) for header in headers) + CRLF + content


def _header(name: str, value: str, params: tuple[tuple[str, str], ...] = ()) -> bytes:
    """One header line, as the email package makes and folds it (and it refuses CR and LF in
    a value). The ones that change with every letter (To, Message-ID, Content-ID) are written
    directly when they are the plain form our own code makes, which the package would write
    unchanged (tests compare the two); it took 0.2 ms of every letter (bench/)."""
    if not params:
        plain = _plain_header(name, value)
        if plain is not None:
            return plain
    return _folded_header(name, value, params)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_MESSAGE_ID = re.compile(rf"<{_ADDR_SPEC}>")
_PLAIN_VALUES = {
    # A comma-separated list of bare addresses (addresses.py only lets such through).
    "To": re.compile(rf"{_ADDR_SPEC}(?:, {_ADDR_SPEC})*"),
    "Message-ID": _MESSAGE_ID,
    "Content-ID": _MESSAGE_ID,
}


def _plain_header(name: str, value: str) -> bytes | None:
    """The header as the email package writes it, for values it leaves as they are; None
    for anything else. Such a value has no space to fold at (a Message-ID) or fits one line:
    a whole line, or else on a line of its own after the name, as the package folds it."""
    pattern = _PLAIN_VALUES.get(name)
    if pattern is None or not pattern.fullmatch(value):
        return None
    line = POLICY.max_line_length
    if len(name) + 2 + len(value) <= line:
        return f"{name}: {value}\r\n".encode("ascii")
    if name != "To" and len(value) + 1 <= line:
        return f"{name}:\r\n {value}\r\n".encode("ascii")
    return None


@functools.lru_cache(maxsize=256)
def _folded_header(name: str, value: str, params: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A header made and folded by the email package. Most repeat in every letter (sender,
    part headers, boundaries): made once."""
    holder = EmailMessage(policy=POLICY)
    holder.add_header(name, value, **dict(params))
    return _header_block(holder)


def _multipart(subtype: str, parts: Sequence[_Part]) -> _Part:
    """A multipart body: each part after a delimiter line (RFC 2046 §5.1.1).

    Each kind of multipart has its own fixed boundary, "=_cobranca_" and the subtype: no part
    can contain it, as quoted-printable never has "=" before "_" and base64 has neither
    character, and none is the start of another, so they nest.
    """
    boundary = f"=_cobranca_{subtype}"
    delimiter = b"--" + boundary.encode("ascii")
    content = b"".join(delimiter + CRLF + _serialize_part(part) + CRLF for part in parts)
    content += delimiter + b"--" + CRLF
    return (("Content-Type", f"multipart/{subtype}", (("boundary", boundary),)),), content


def _header_block(message: EmailMessage) -> bytes:
    return b"".join(POLICY.fold_binary(name, value) for name, value in message.items())
