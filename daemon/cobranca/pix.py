"""Static Pix BR Code ("copia e cola") and its QR code, for the total of a collection letter.

Follows the Banco Central's "Manual de Padrões para Iniciação do Pix": EMV TLV fields
(ID, 2-digit length, value) ending in a CRC16/CCITT-FALSE. Written here rather than taken from
PyPI because the format is small, the manual's test vector pins it byte for byte, and the small
Pix libraries on PyPI were tried and produce wrong CRCs or drop field 62. A wrong code in a
letter means a customer who cannot pay, so every code can be re-read with `parse_brcode`
(CRC and lengths checked) before it is printed.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import segno

from cobranca.addresses import is_valid_address
from cobranca.taxid import valid_cnpj, valid_cpf

MAX_NAME = 25  # field 59, merchant name
MAX_CITY = 15  # field 60, merchant city
MAX_TXID = 25  # field 62/05 in a static code
MAX_EMAIL = 77  # longest e-mail that still fits field 26 (18 + 4 + 77 = 99)
MAX_AMOUNT_CHARS = 13  # field 54

GUI = "br.gov.bcb.pix"
NO_TXID = "***"

KeyKind = Literal["cpf", "cnpj", "email", "phone", "evp"]


class PixError(ValueError):
    """A Pix key, name, city, amount or BR Code that cannot be used; the message says why."""


# --- CRC ---------------------------------------------------------------------------------


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0): field 63's CRC."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _crc_hex(text: str) -> str:
    return f"{crc16_ccitt_false(text.encode('ascii')):04X}"


# --- text --------------------------------------------------------------------------------

# Letters that NFKD leaves whole but that have an obvious ASCII spelling.
_EXTRA_ASCII = str.maketrans(
    {"ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o", "Đ": "D",
     "đ": "d", "Ł": "L", "ł": "l", "Þ": "Th", "þ": "th"}
)  # fmt: skip


def ascii_text(text: str) -> str:
    """Printable ASCII for a BR Code field: accents dropped ("São Paulo" → "Sao Paulo").

    Banking apps show fields 59/60 as they are and some reject non-ASCII codes outright, so
    letters are transliterated (NFKD without combining marks), any whitespace (CR, LF, tab...)
    becomes a single space, and whatever is still not printable ASCII is dropped. Case is kept.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_EXTRA_ASCII))
    kept = []
    for char in decomposed:
        if char.isspace():
            kept.append(" ")
        elif " " <= char <= "~":
            kept.append(char)
    return " ".join("".join(kept).split())


def _limited_text(text: str, limit: int, what: str) -> str:
    clean = ascii_text(text)
    if not clean:
        raise PixError(f"the Pix {what} is empty; write the {what} as the bank has it")
    if len(clean) > limit:
        raise PixError(
            f"the Pix {what} {clean!r} has {len(clean)} characters, the BR Code allows at most "
            f"{limit}; write a shorter {what} (abbreviate, as the bank does)"
        )
    return clean


def merchant_name(text: str) -> str:
    """Field 59: the receiver's name in ASCII, 1..25 characters, or PixError."""
    return _limited_text(text, MAX_NAME, "receiver name")


def merchant_city(text: str) -> str:
    """Field 60: the receiver's city in ASCII, 1..15 characters, or PixError."""
    return _limited_text(text, MAX_CITY, "receiver city")


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def sanitize_txid(text: str) -> str:
    """Field 62/05: only [A-Za-z0-9], at most 25; "***" when nothing is left.

    Banks reject a static code whose txid has anything else, and the txid is only a reference
    shown on the statement, so e.g. "NF 001/2024-A" quietly becomes "NF0012024A".
    """
    return _NOT_ALNUM.sub("", text)[:MAX_TXID] or NO_TXID


# --- keys --------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_LIKE = re.compile(r"[0-9a-fA-F-]{20,}")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")
_TAXID_PUNCTUATION = re.compile(r"[\s./-]")
_KEY_FORMS = (
    "a CPF (11 digits), a CNPJ (14 characters), an e-mail, a phone as +55 with DDD "
    "(+5511999999999) or a random key (123e4567-e12b-12d1-a456-426655440000)"
)


def classify_key(text: str) -> tuple[KeyKind, str]:
    """(kind, normalized key) for a Pix key as a person writes it, or PixError.

    CPF and CNPJ lose their punctuation and must have valid check digits (the CNPJ may be the
    alphanumeric one of July 2026); e-mails are lower-cased; phones become +55DDDNUMBER; random
    keys (EVP) become lower-case UUIDs with hyphens. Eleven bare digits are ambiguous (CPF, or a
    mobile phone without +55): they are read as a CPF, and a phone key must start with "+55".
    """
    key = text.strip()
    if not key:
        raise PixError(f"the Pix key is empty; write {_KEY_FORMS}")
    if not key.isascii() or not key.isprintable():
        raise PixError(
            f"the Pix key {key!r} has characters a Pix key cannot have; write {_KEY_FORMS}"
        )

    if "@" in key:
        email = key.lower()
        if not is_valid_address(email):
            raise PixError(
                f"the Pix key {key!r} is not a valid e-mail; write it as name@domain.com.br"
            )
        if len(email) > MAX_EMAIL:
            raise PixError(
                f"the e-mail Pix key has {len(email)} characters, Pix allows at most {MAX_EMAIL}"
            )
        return "email", email

    if key.startswith("+"):
        phone = _PHONE_PUNCTUATION.sub("", key)
        if not re.fullmatch(r"\+55[0-9]{10,11}", phone):
            raise PixError(
                f"the Pix key {key!r} is not a Brazilian phone; write +55, the DDD and the "
                "number, e.g. +55 (11) 99999-9999"
            )
        return "phone", phone

    if _UUID_LIKE.fullmatch(key) and "-" in key:
        evp = key.lower()
        if not _UUID.fullmatch(evp):
            raise PixError(
                f"the Pix key {key!r} is not a valid random key; write the 36 characters the bank "
                "showed, e.g. 123e4567-e12b-12d1-a456-426655440000"
            )
        return "evp", evp

    bare = _TAXID_PUNCTUATION.sub("", key).upper()
    if re.fullmatch(r"[0-9]{11}", bare):
        if not valid_cpf(bare):
            raise PixError(
                f"the Pix key {key!r} is read as a CPF and its check digits are wrong; check the "
                "CPF, or if it is a mobile phone write it as +55 and the number"
            )
        return "cpf", bare
    if re.fullmatch(r"[0-9A-Z]{14}", bare):
        if not valid_cnpj(bare):
            raise PixError(f"the Pix key {key!r} is read as a CNPJ and its check digits are wrong")
        return "cnpj", bare
    if re.fullmatch(r"[0-9]{10,13}", bare):
        raise PixError(
            f"the Pix key {key!r} looks like a phone number; write phones as +55, the DDD and "
            "the number, e.g. +5511999999999"
        )
    raise PixError(f"the Pix key {key!r} is not a Pix key; write {_KEY_FORMS}")


def pix_key(text: str) -> str:
    """The normalized Pix key (see `classify_key`), or PixError."""
    return classify_key(text)[1]


# --- receiver and code -------------------------------------------------------------------


@dataclass(frozen=True)
class PixReceiver:
    """Who receives the payment: normalized key, name (field 59) and city (field 60).

    Build it with `pix_receiver`; constructing it directly with unnormalized values raises, so
    a receiver that exists is one whose code will be accepted.
    """

    key: str
    name: str
    city: str

    def __post_init__(self) -> None:
        if (pix_key(self.key), merchant_name(self.name), merchant_city(self.city)) != (
            self.key,
            self.name,
            self.city,
        ):
            raise PixError("PixReceiver needs normalized values; build it with pix_receiver()")


def pix_receiver(key: str, name: str, city: str) -> PixReceiver:
    """Validate and normalize a receiver as configured (PixError says what to fix)."""
    return PixReceiver(pix_key(key), merchant_name(name), merchant_city(city))


def _tlv(field_id: str, value: str) -> str:
    if not value.isascii():
        raise PixError(f"BR Code field {field_id} is not ASCII: {value!r}")
    if len(value) > 99:
        raise PixError(f"BR Code field {field_id} has {len(value)} characters, at most 99 fit")
    return f"{field_id}{len(value):02d}{value}"


def format_amount(amount: Decimal) -> str | None:
    """Field 54: cents rounded half-up, "1025.66"; None for zero (field omitted)."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"the Pix amount must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite():
        raise PixError(f"the Pix amount {amount} is not a number")
    if amount < 0:
        raise PixError(f"the Pix amount {amount} is negative")
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if cents == 0:
        return None
    text = f"{cents:f}"
    if len(text) > MAX_AMOUNT_CHARS:
        raise PixError(f"the Pix amount {text} has more than {MAX_AMOUNT_CHARS} characters")
    return text


def brcode(
    receiver: PixReceiver, amount: Decimal | None, txid: str = "", description: str = ""
) -> str:
    """The static BR Code ("copia e cola") paying `amount` to `receiver`.

    No amount (None or zero after rounding to cents) lets the payer type it. The txid is
    sanitized (`sanitize_txid`). The description (field 26/02, shown by some apps) is made ASCII
    and left out when it does not fit in field 26's 99 characters.
    """
    account = _tlv("00", GUI) + _tlv("01", receiver.key)
    note = ascii_text(description)
    if note and len(account) + 4 + len(note) <= 99:
        account += _tlv("02", note)
    amount_text = None if amount is None else format_amount(amount)
    payload = (
        _tlv("00", "01")
        + _tlv("26", account)
        + _tlv("52", "0000")
        + _tlv("53", "986")
        + (_tlv("54", amount_text) if amount_text else "")
        + _tlv("58", "BR")
        + _tlv("59", receiver.name)
        + _tlv("60", receiver.city)
        + _tlv("62", _tlv("05", sanitize_txid(txid)))
        + "6304"
    )
    return payload + _crc_hex(payload)


# --- reading a code back -----------------------------------------------------------------

_TEMPLATES = {f"{n:02d}" for n in (*range(26, 52), 62, *range(80, 100))}


def _split_tlv(text: str, where: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        head = text[pos : pos + 4]
        if len(head) < 4 or not head.isdigit():
            raise PixError(f"BR Code {where}: bad field header {head!r} at position {pos}")
        field_id, length = head[:2], int(head[2:])
        value = text[pos + 4 : pos + 4 + length]
        if len(value) != length:
            raise PixError(
                f"BR Code {where}: field {field_id} says {length} characters, {len(value)} remain"
            )
        if field_id in fields:
            raise PixError(f"BR Code {where}: field {field_id} appears twice")
        fields[field_id] = value
        pos += 4 + length
    return fields


def parse_brcode(payload: str) -> dict[str, str | dict[str, str]]:
    """Split a BR Code into {ID: value}, templates (26-51, 62, 80-99) as nested dicts.

    Raises PixError when the CRC does not match, a length is inconsistent, or the code does not
    start with 000201 and end with field 63: the self-check before a code goes into a letter.
    """
    if not payload.isascii():
        raise PixError("BR Code has non-ASCII characters")
    if not payload.startswith("000201"):
        raise PixError("BR Code does not start with the payload format field 000201")
    if len(payload) < 8 or payload[-8:-4] != "6304":
        raise PixError("BR Code does not end with the CRC field 6304")
    crc = payload[-4:]
    if crc.upper() != _crc_hex(payload[:-4]):
        raise PixError(f"BR Code CRC is {crc}, the content gives {_crc_hex(payload[:-4])}")
    parsed: dict[str, str | dict[str, str]] = {}
    for field_id, value in _split_tlv(payload, "payload").items():
        parsed[field_id] = (
            _split_tlv(value, f"field {field_id}") if field_id in _TEMPLATES else value
        )
    return parsed


# --- QR ------------------------------------------------------------------------------------


QR_MASK = 0  # see qr_png


def qr_png(payload: str, *, scale: int = 5, border: int = 4) -> bytes:
    """The payload as a QR code PNG (error correction M, as the manual recommends).

    Byte mode, no error-level boosting, 1-bit PNG: a typical code is ~1-2 KB. The mask is
    fixed: every mask pattern is valid and any reader decodes it; letting segno score all
    eight took 7 of the 9 ms a letter's QR cost (bench/), for a marginally "nicer" pattern.
    """
    if not payload or not payload.isascii():
        raise PixError("the QR payload must be non-empty ASCII")
    qr = segno.make_qr(payload, error="m", boost_error=False, mask=QR_MASK)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=scale, border=border)
    return out.getvalue()
