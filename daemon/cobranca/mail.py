"""Build the MIME message of a letter with the standard library, headers safe by construction.

Recipients come only from validated plain addresses and the subject is already one line, so ERP
text can never add a header. yagmail is kept for the connection only: its own message builder
rewrites HTML and derives Message-IDs from the subject (see shared/libraries.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from .config import Delivery
from .models import InlineImage, RenderedLetter


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
) -> EmailMessage:
    """multipart/alternative (text + HTML), inside multipart/mixed when PDFs are attached.

    Inline images (the Pix QR code) go in a multipart/related around the HTML, each with the
    Content-ID the HTML names in ``src="cid:…"``: Gmail and Outlook do not show data: images.
    """
    message = EmailMessage(policy=SMTP)
    local, domain = delivery.from_address.rsplit("@", 1)
    message["From"] = Address(display_name=delivery.from_name, username=local, domain=domain)
    message["To"] = ", ".join(recipients)
    if delivery.reply_to:
        message["Reply-To"] = delivery.reply_to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Cobranca-Layout"] = layout
    # quoted-printable keeps the stored .eml and the server's copy readable by a person.
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    if inline_images:
        html_part = message.get_payload()[1]
        for image in inline_images:
            html_part.add_related(
                image.content,
                maintype="image",
                subtype="png",
                cid=f"<{image.content_id}>",
                filename=image.filename,
                disposition="inline",
            )
    for filename, content in attachments:
        message.add_attachment(content, maintype="application", subtype="pdf", filename=filename)
    return message
