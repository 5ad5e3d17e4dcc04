"""Static Pix BR Code ("copia e cola") and its QR code, for the total of a collection letter.

Follows the Banco Central's "Manual de Padrões para Iniciação do Pix": EMV TLV fields
(ID, 2-digit length, value) ending in a CRC16/CCITT-FALSE. Written here rather than taken from
PyPI because the format is small, the manual's test vector pins it byte for byte, and the small
Pix libraries on PyPI were tried and produce wrong CRCs or drop field 62. A wrong code in a
letter means a customer who cannot pay, so every code can be re-read with `parse_brcode`
(CRC and lengths checked) before it is printed.
"""

from __future__ import annotations

import binascii
import operator
import re
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from itertools import chain
from typing import Literal

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
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0): field 63's CRC.

    That is the standard library's CRC-CCITT (binascii.crc_hqx, in C) started at 0xFFFF; the
    check value "123456789" → 0x29B1 is in tests/test_pix.py.
    """
    return binascii.crc_hqx(data, 0xFFFF)


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
#
# A QR code encoder for this one use (byte mode, error correction M, mask 0), written here
# because segno spent ~3.5 ms of a letter's ~6 ms on it (bench/): its general encoder and its
# PNG writer work module by module in Python. Here everything that depends only on the
# version (function patterns, where each data bit goes, the mask) is worked out once per
# version and cached, and a code is: Reed-Solomon on ints, one itemgetter over its bits, one
# table look-up per 8 modules for the PNG rows. ISO/IEC 18004:2015 is the reference for every
# step; tests/test_pix.py checks every version 1..40 module for module against zxing-cpp's
# encoder, the function patterns against segno's, and reads the PNGs back with zxing-cpp.

QR_MASK = 0  # see qr_png
QR_MAX_VERSION = 40

# Error correction level M, per version 1..40: EC codewords per block, and the blocks as
# (count, data codewords per block). ISO/IEC 18004 table 9.
_QR_BLOCKS_M: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = (
    (10, ((1, 16),)), (16, ((1, 28),)), (26, ((1, 44),)), (18, ((2, 32),)),
    (24, ((2, 43),)), (16, ((4, 27),)), (18, ((4, 31),)), (22, ((2, 38), (2, 39))),
    (22, ((3, 36), (2, 37))), (26, ((4, 43), (1, 44))), (30, ((1, 50), (4, 51))),
    (22, ((6, 36), (2, 37))), (22, ((8, 37), (1, 38))), (24, ((4, 40), (5, 41))),
    (24, ((5, 41), (5, 42))), (28, ((7, 45), (3, 46))), (28, ((10, 46), (1, 47))),
    (26, ((9, 43), (4, 44))), (26, ((3, 44), (11, 45))), (26, ((3, 41), (13, 42))),
    (26, ((17, 42),)), (28, ((17, 46),)), (28, ((4, 47), (14, 48))), (28, ((6, 45), (14, 46))),
    (28, ((8, 47), (13, 48))), (28, ((19, 46), (4, 47))), (28, ((22, 45), (3, 46))),
    (28, ((3, 45), (23, 46))), (28, ((21, 45), (7, 46))), (28, ((19, 47), (10, 48))),
    (28, ((2, 46), (29, 47))), (28, ((10, 46), (23, 47))), (28, ((14, 46), (21, 47))),
    (28, ((14, 46), (23, 47))), (28, ((12, 47), (26, 48))), (28, ((6, 47), (34, 48))),
    (28, ((29, 46), (14, 47))), (28, ((13, 46), (32, 47))), (28, ((40, 47), (7, 48))),
    (28, ((18, 47), (31, 48))),
)  # fmt: skip
_QR_PAD = b"\xec\x11"

# GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1.
_GF_EXP = [0] * 512
_GF_LOG = [0] * 256
_value = 1
for _power in range(255):
    _GF_EXP[_power] = _value
    _GF_LOG[_value] = _power
    _value <<= 1
    if _value & 0x100:
        _value ^= 0x11D
for _power in range(255, 512):
    _GF_EXP[_power] = _GF_EXP[_power - 255]
del _value, _power


def _gf_mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _GF_EXP[_GF_LOG[a] + _GF_LOG[b]]


@lru_cache(maxsize=16)
def _rs_table(degree: int) -> tuple[int, ...]:
    """For each byte f, f × the generator polynomial (without its leading 1) as one int.

    Dividing by the generator then takes one table look-up, a shift and an XOR per data byte.
    """
    generator = [1]
    for power in range(degree):
        root = _GF_EXP[power]
        generator = [
            (generator[i] if i < len(generator) else 0)
            ^ (_gf_mul(generator[i - 1], root) if i > 0 else 0)
            for i in range(len(generator) + 1)
        ]
    tail = generator[1:]
    return tuple(
        int.from_bytes(bytes(_gf_mul(factor, g) for g in tail), "big") for factor in range(256)
    )


def _rs_remainder(data: bytes, degree: int) -> bytes:
    """The `degree` error correction codewords of one block."""
    table = _rs_table(degree)
    top = 8 * (degree - 1)
    keep = (1 << (8 * degree)) - 1
    remainder = 0
    for byte in data:
        remainder = ((remainder << 8) & keep) ^ table[(remainder >> top) ^ byte]
    return remainder.to_bytes(degree, "big")


def _qr_data_capacity(version: int) -> int:
    return sum(count * size for count, size in _QR_BLOCKS_M[version - 1][1])


def _qr_version(length: int) -> int:
    """The smallest version whose byte-mode, level M capacity takes `length` bytes."""
    for version in range(1, QR_MAX_VERSION + 1):
        count_bits = 8 if version < 10 else 16
        if 4 + count_bits + 8 * length <= 8 * _qr_data_capacity(version):
            return version
    raise PixError(f"the QR payload has {length} characters, too many for a QR code")


def _qr_codewords(data: bytes, version: int) -> bytes:
    """Mode, length, data, terminator and padding, in blocks with their EC, interleaved."""
    count_bits = 8 if version < 10 else 16
    capacity = _qr_data_capacity(version)
    bits = 4 + count_bits + 8 * len(data)
    value = (((0b0100 << count_bits) | len(data)) << (8 * len(data))) | int.from_bytes(data)
    terminator = min(4, 8 * capacity - bits)
    value <<= terminator
    bits += terminator
    value <<= -bits % 8
    stream = value.to_bytes((bits + 7) // 8, "big")
    stream += (_QR_PAD * capacity)[: capacity - len(stream)]

    degree, groups = _QR_BLOCKS_M[version - 1]
    blocks = []
    pos = 0
    for count, size in groups:
        for _ in range(count):
            blocks.append(stream[pos : pos + size])
            pos += size
    # Interleaved: the i-th codeword of every block in turn; the longer blocks (second group)
    # have one more data codeword, which comes after all the others.
    shortest = groups[0][1]
    checks = [_rs_remainder(block, degree) for block in blocks]
    return b"".join(
        (
            bytes(chain.from_iterable(zip(*blocks, strict=False))),
            bytes(block[shortest] for block in blocks if len(block) > shortest),
            bytes(chain.from_iterable(zip(*checks, strict=True))),
        )
    )


def _bch(value: int, bits: int, generator: int) -> int:
    """`value` followed by its BCH remainder (format and version information)."""
    degree = generator.bit_length() - 1
    remainder = value << degree
    for shift in range(bits + degree - 1, degree - 1, -1):
        if remainder >> shift & 1:
            remainder ^= generator << (shift - degree)
    return (value << degree) | remainder


def _alignment_positions(version: int) -> list[int]:
    if version == 1:
        return []
    count = version // 7 + 2
    size = 17 + 4 * version
    step = 26 if version == 32 else (version * 4 + count * 2 + 1) // (count * 2 - 2) * 2
    return [6] + [size - 7 - i * step for i in range(count - 2, -1, -1)]


@lru_cache(maxsize=8)  # the few versions a run's codes use
def _qr_symbol(version: int) -> tuple[tuple[int | None, ...], tuple[tuple[int, int], ...]]:
    """The symbol's fixed modules (row-major, 1 dark, 0 light, None for data) and the data
    modules in the order the codeword bits fill them (ISO/IEC 18004 7.7.3)."""
    size = 17 + 4 * version
    grid: list[list[int | None]] = [[None] * size for _ in range(size)]

    def put(row: int, col: int, dark: bool) -> None:
        grid[row][col] = 1 if dark else 0

    for i in range(size):  # timing patterns
        put(6, i, i % 2 == 0)
        put(i, 6, i % 2 == 0)
    for row, col in ((3, 3), (3, size - 4), (size - 4, 3)):  # finders with their separators
        for dr in range(-4, 5):
            for dc in range(-4, 5):
                if 0 <= row + dr < size and 0 <= col + dc < size:
                    put(row + dr, col + dc, max(abs(dr), abs(dc)) not in (2, 4))
    centres = _alignment_positions(version)
    last = len(centres) - 1
    for i, row in enumerate(centres):
        for j, col in enumerate(centres):
            if (i, j) in ((0, 0), (0, last), (last, 0)):
                continue
            for dr in range(-2, 3):
                for dc in range(-2, 3):
                    put(row + dr, col + dc, max(abs(dr), abs(dc)) != 1)
    # Format information: level M is 00, then the mask; masked with 101010000010010.
    form = _bch(QR_MASK, 5, 0x537) ^ 0x5412
    for i in range(15):
        dark = bool(form >> i & 1)
        if i < 6:
            put(i, 8, dark)
        elif i < 8:
            put(i + 1, 8, dark)
        elif i == 8:
            put(8, 7, dark)
        else:
            put(8, 14 - i, dark)
        if i < 8:
            put(8, size - 1 - i, dark)
        else:
            put(size - 15 + i, 8, dark)
    put(size - 8, 8, True)  # the dark module
    if version >= 7:
        info = _bch(version, 6, 0x1F25)
        for i in range(18):
            dark = bool(info >> i & 1)
            put(size - 11 + i % 3, i // 3, dark)
            put(i // 3, size - 11 + i % 3, dark)

    order = []
    right = size - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        for vert in range(size):
            row = size - 1 - vert if upward else vert
            for col in (right, right - 1):
                if grid[row][col] is None:
                    order.append((row, col))
        right -= 2
    return tuple(tuple(row) for row in grid), tuple(order)


@lru_cache(maxsize=8)
def _qr_placement(version: int, border: int) -> tuple[Callable[[str], tuple[str, ...]], int, int]:
    """(getter, data modules, mask) of a version drawn with `border` light modules around it.

    The getter takes the masked data bits (one "0"/"1" per data module, in placement order)
    followed by "01", and returns the symbol row by row, one "0" (light) or "1" (dark) per
    module, each row padded with light modules to a multiple of 8: putting every module in
    place is one call, in C.
    """
    grid, order = _qr_symbol(version)
    count = len(order)
    mask = 0
    index = {}
    for k, (row, col) in enumerate(order):
        index[row, col] = k
        if (row + col) % 2 == 0:  # mask 0
            mask |= 1 << (count - 1 - k)
    size = len(grid)
    light, dark = count, count + 1
    width = size + 2 * border
    picks = []
    for row in range(-border, size + border):
        for col in range(-border, size + border):
            if 0 <= row < size and 0 <= col < size:
                fixed = grid[row][col]
                picks.append(index[row, col] if fixed is None else dark if fixed else light)
            else:
                picks.append(light)
        picks.extend([light] * (-width % 8))
    return operator.itemgetter(*picks), count, mask


def _qr_rows(payload: str, border: int) -> tuple[bytes, int]:
    """The symbol with its border as bits, 1 dark, each row padded to whole bytes; its width."""
    if not payload or not payload.isascii():
        raise PixError("the QR payload must be non-empty ASCII")
    data = payload.encode("ascii")
    version = _qr_version(len(data))
    getter, count, mask = _qr_placement(version, border)
    codewords = _qr_codewords(data, version)
    bits = int.from_bytes(codewords) << (count - 8 * len(codewords))
    drawing = "".join(getter(f"{bits ^ mask:0{count}b}01"))
    width = 17 + 4 * version + 2 * border
    return int(drawing, 2).to_bytes(len(drawing) // 8, "big"), width


def qr_modules(payload: str, *, border: int = 0) -> list[str]:
    """The QR code of `payload` (byte mode, level M, mask 0) as rows of "0" (light) and "1"
    (dark), with `border` light modules around it."""
    packed, width = _qr_rows(payload, border)
    line = (width + 7) // 8
    return [
        f"{int.from_bytes(packed[i : i + line]):0{8 * line}b}"[:width]
        for i in range(0, len(packed), line)
    ]


@lru_cache(maxsize=16)
def _png_pixels(scale: int) -> tuple[bytes, ...]:
    """For each byte of 8 modules (1 dark), its `scale` bytes of 1-bit pixels (0 black)."""
    return tuple(
        int("".join(("0" if bit == "1" else "1") * scale for bit in f"{byte:08b}"), 2).to_bytes(
            scale, "big"
        )
        for byte in range(256)
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        len(data).to_bytes(4, "big")
        + kind
        + data
        + zlib.crc32(data, zlib.crc32(kind)).to_bytes(4, "big")
    )


def qr_png(payload: str, *, scale: int = 5, border: int = 4) -> bytes:
    """The payload as a QR code PNG (error correction M, as the manual recommends).

    Byte mode, no error-level boosting, 1-bit grayscale PNG: a typical code is ~1 KB. The mask
    is fixed: every mask pattern is valid and any reader decodes it; scoring all eight (as QR
    libraries do by default) took 7 of the 9 ms a letter's QR cost (bench/), for a marginally
    "nicer" pattern. Each module is `scale` pixels square; `border` modules of quiet zone.
    """
    if scale < 1 or border < 0:
        raise ValueError("the QR scale must be at least 1 and the border at least 0")
    packed, modules = _qr_rows(payload, border)
    width = modules * scale
    row_bytes = (width + 7) // 8
    # Each module byte becomes `scale` pixel bytes (one look-up per 8 modules, in C), each row
    # keeps the bytes its width needs, after its filter-type byte (0: none), `scale` times.
    pixels = b"".join(map(_png_pixels(scale).__getitem__, packed))
    line = (modules + 7) // 8 * scale
    raw = b"".join(
        (b"\x00" + pixels[i : i + row_bytes]) * scale for i in range(0, len(pixels), line)
    )
    header = width.to_bytes(4, "big") * 2 + bytes((1, 0, 0, 0, 0))  # 1-bit grayscale
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(raw, 1)),
            _png_chunk(b"IEND", b""),
        )
    )
