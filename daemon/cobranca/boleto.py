"""Bank boleto (bloqueto de cobrança) typeable line and barcode, FEBRABAN layout.

Protheus keeps a título's boleto in SE1: E1_CODDIG holds the typeable line (47 digits, or the
44-digit barcode in some installations) and E1_CODBAR the barcode, both space-padded and
sometimes with the dots and spaces of the printed form. A letter must never print a line that
a bank would refuse, so every check digit is verified and each error says which one is wrong.

Barcode, 44 digits: bank(3) currency(1) check digit(1) due factor(4) amount in cents(10)
free field(25). Typeable line, 47 digits, in five fields::

    AAABC.CCCCX DDDDD.DDDDDY EEEEE.EEEEEZ K UUUUVVVVVVVVVV

field 1 = bank, currency, free[0:5] and its mod-10 digit X; field 2 = free[5:15] and Y;
field 3 = free[15:25] and Z; field 4 = K, the barcode's check digit; field 5 = due factor U and
amount V. Field 5 has no digit of its own: K covers it, except that mod-11 remainders 0, 1 and 10
all give K = 1, so a rare single-digit change of factor or amount cannot be detected.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

__all__ = [
    "Boleto",
    "BoletoError",
    "barcode_to_line",
    "boleto_from_title",
    "due_date_from_factor",
    "line_to_barcode",
    "mod10",
    "mod11_barcode",
    "parse_boleto",
]

LINE_LENGTH = 47
BARCODE_LENGTH = 44

FACTOR_BASE = date(1997, 10, 7)
"""Day 0 of the due factor (Banco Central, Carta Circular 2.926)."""
FACTOR_CYCLE = 9000
"""Days between two dates with the same factor: 9999 was 2025-02-21, 1000 is again 2025-02-22."""
WINDOW_BEFORE = 3499
"""A factor of 1000..9999 is read as the one date from this many days before the reference date
to 5,500 days after it (9,000 days, one per factor). FEBRABAN only accepts boletos due 3,000
days before to 5,500 days after the current date, so every payable boleto falls inside it, and
a letter about an old debt still gets the date right for up to nine and a half years."""

_DIGITS = re.compile(r"[0-9]*")


class BoletoError(ValueError):
    """A typeable line or barcode that is malformed or whose check digits do not match."""


def _require_digits(digits: str) -> None:
    if not _DIGITS.fullmatch(digits):
        raise BoletoError("non-digit characters")


# Digit d weighted 2, with a two-digit product counting the sum of its digits.
_DOUBLED = {str(d): (2 * d) // 10 + (2 * d) % 10 for d in range(10)}
# Weights of mod11_barcode from the right (2..9, cycling), for up to 43 digits.
_MOD11_WEIGHTS = tuple(2 + position % 8 for position in range(BARCODE_LENGTH - 1))


def mod10(digits: str) -> int:
    """Check digit of a typeable line field: weights 2, 1, 2, … from the right, products > 9
    count the sum of their digits, result (10 - sum mod 10) mod 10."""
    _require_digits(digits)
    total = sum(map(_DOUBLED.__getitem__, digits[::-2])) + sum(map(int, digits[-2::-2]))
    return (10 - total % 10) % 10


def mod11_barcode(digits: str) -> int:
    """General check digit of a barcode over its 43 other digits: weights 2..9 cycling from the
    right, result 11 - (sum mod 11), with 0, 10 and 11 becoming 1 (the digit is never 0)."""
    _require_digits(digits)
    if len(digits) <= len(_MOD11_WEIGHTS):
        total = sum(map(operator.mul, map(int, reversed(digits)), _MOD11_WEIGHTS))
    else:
        total = sum(int(c) * (2 + position % 8) for position, c in enumerate(reversed(digits)))
    result = 11 - total % 11
    return 1 if result in (0, 10, 11) else result


def _check_barcode(barcode: str) -> None:
    _require_digits(barcode)
    if len(barcode) != BARCODE_LENGTH:
        raise BoletoError(f"barcode: {BARCODE_LENGTH} digits expected, got {len(barcode)}")
    expected = mod11_barcode(barcode[:4] + barcode[5:])
    if int(barcode[4]) != expected:
        raise BoletoError(f"barcode: general check digit is {barcode[4]}, expected {expected}")


# The line's first three fields: (start, end) of their data; the check digit is at `end`.
_LINE_FIELDS = ((0, 9), (10, 20), (21, 31))


def _check_line_fields(line: str) -> None:
    _require_digits(line)
    if len(line) != LINE_LENGTH:
        raise BoletoError(f"typeable line: {LINE_LENGTH} digits expected, got {len(line)}")
    for number, (start, end) in enumerate(_LINE_FIELDS, start=1):
        expected = mod10(line[start:end])
        if int(line[end]) != expected:
            raise BoletoError(
                f"typeable line: check digit of field {number} is {line[end]}, expected {expected}"
            )


def barcode_to_line(barcode: str) -> str:
    """The 47-digit typeable line of a 44-digit barcode, whose check digit must be right."""
    _check_barcode(barcode)
    free = barcode[19:]
    fields = (barcode[0:4] + free[0:5], free[5:15], free[15:25])
    return "".join(field + str(mod10(field)) for field in fields) + barcode[4] + barcode[5:19]


def line_to_barcode(line: str) -> str:
    """The 44-digit barcode of a 47-digit typeable line, whose check digits must all be right."""
    _check_line_fields(line)
    barcode = line[0:4] + line[32:47] + line[4:9] + line[10:20] + line[21:31]
    expected = mod11_barcode(barcode[:4] + barcode[5:])
    if int(line[32]) != expected:
        raise BoletoError(
            f"typeable line: general check digit (field 4) is {line[32]}, expected {expected}"
        )
    return barcode


def due_date_from_factor(factor: int, reference: date) -> date | None:
    """The due date a factor stands for, or None for factor 0 (a boleto without due date).

    Factors 1..999 stand for dates before 2000-07-03 (factor 1000), when the factor was not
    in use yet and the counting restarts at 1000, so they only have that first date.
    Factor 1000..9999 repeats every 9,000 days since the FEBRABAN rollover of 2025-02-22
    (factor 1000 again), so the date is the one within the window from WINDOW_BEFORE days
    before ``reference`` to 5,500 days after it; never before 2000-07-03.
    """
    if not 0 <= factor <= 9999:
        raise BoletoError(f"due factor must be 0 to 9999, got {factor}")
    if factor == 0:
        return None
    first = FACTOR_BASE + timedelta(days=factor)
    if factor < 1000:
        return first
    window_start = reference - timedelta(days=WINDOW_BEFORE)
    cycles = max(0, -((first - window_start).days // FACTOR_CYCLE))
    return first + timedelta(days=cycles * FACTOR_CYCLE)


@dataclass(frozen=True)
class Boleto:
    """A bank boleto whose typeable line and barcode agree and have every check digit right."""

    line: str
    barcode: str

    def __post_init__(self) -> None:
        # Verifies the line's four check digits and that the barcode is the same boleto.
        if line_to_barcode(self.line) != self.barcode:
            raise BoletoError("typeable line and barcode are not the same boleto")

    @property
    def formatted_line(self) -> str:
        """The line as printed on a boleto: AAABC.CCCCX DDDDD.DDDDDY EEEEE.EEEEEZ K UUUUV…V."""
        s = self.line
        return f"{s[0:5]}.{s[5:10]} {s[10:15]}.{s[15:21]} {s[21:26]}.{s[26:32]} {s[32]} {s[33:]}"

    @property
    def bank(self) -> str:
        """The bank's 3-digit compensation code (001 Banco do Brasil, 237 Bradesco, …)."""
        return self.barcode[0:3]

    @property
    def currency(self) -> str:
        """Currency code: 9 for the real."""
        return self.barcode[3]

    @property
    def due_factor(self) -> int:
        """Days since 1997-10-07, modulo the 2025 rollover; 0 when the boleto has no due date."""
        return int(self.barcode[5:9])

    @property
    def amount(self) -> Decimal:
        """The amount in reais with two places; 0.00 means the payer enters the amount."""
        return Decimal(self.barcode[9:19]).scaleb(-2)

    @property
    def free_field(self) -> str:
        """The 25 digits each bank lays out its own way (agency, account, nosso número, …)."""
        return self.barcode[19:44]

    @property
    def due_date(self) -> date | None:
        """The due date as read today; use due_date_as_of() for a fixed reference date."""
        return self.due_date_as_of(date.today())

    def due_date_as_of(self, reference: date) -> date | None:
        """The due date read within the window around ``reference`` (see due_date_from_factor)."""
        return due_date_from_factor(self.due_factor, reference)


# ASCII spaces and punctuation (Unicode categories Z and P, and whitespace): what _digits_of
# drops from the usual "23790.12345 60000.000003 ..." without looking at each character.
_ASCII_SEPARATORS = "".join(
    char for char in map(chr, range(128)) if char.isspace() or unicodedata.category(char)[0] in "PZ"
)
_DROP_ASCII_SEPARATORS = str.maketrans("", "", _ASCII_SEPARATORS)


def _digits_of(text: str) -> str:
    """The digits of a value as typed: spaces, dots and other punctuation go, letters do not."""
    if text.isascii():
        digits = text.translate(_DROP_ASCII_SEPARATORS)
        if digits.isdigit() or not digits:  # only 0-9 are ASCII digits
            return digits
    digits = []
    rejected = []
    for char in text:
        if "0" <= char <= "9":
            digits.append(char)
        elif char.isspace() or unicodedata.category(char)[0] in "PZ":
            continue
        else:
            rejected.append(char)
    if rejected:
        shown = ", ".join(repr(char) for char in dict.fromkeys(rejected))
        raise BoletoError(f"non-digit characters: {shown}")
    return "".join(digits)


def _verified(line: str, barcode: str) -> Boleto:
    """A Boleto from a line and barcode that line_to_barcode or barcode_to_line just made one
    from the other, checking every digit: Boleto's own check would repeat the same work."""
    boleto = object.__new__(Boleto)
    object.__setattr__(boleto, "line", line)
    object.__setattr__(boleto, "barcode", barcode)
    return boleto


def parse_boleto(text: str) -> Boleto:
    """A boleto from its typeable line (47 digits) or barcode (44), as typed or printed."""
    digits = _digits_of(text)
    if len(digits) == LINE_LENGTH:
        return _verified(digits, line_to_barcode(digits))
    if len(digits) == BARCODE_LENGTH:
        if digits.startswith("8"):
            raise BoletoError(
                "a barcode starting with 8 is a utility or tax payment (arrecadação), "
                "not a bank boleto"
            )
        return _verified(barcode_to_line(digits), digits)
    if len(digits) == 48 and digits.startswith("8"):
        raise BoletoError(
            "48 digits starting with 8 is a utility or tax payment (arrecadação), not a bank boleto"
        )
    raise BoletoError(f"47 or 44 digits expected, got {len(digits)}")


def boleto_from_title(typeable_line: str | None, barcode: str | None) -> Boleto | None:
    """The boleto of a título from E1_CODDIG and E1_CODBAR, None when both are blank.

    E1_CODDIG is what the bank printed, so it wins; E1_CODBAR is only read when E1_CODDIG is
    blank, or to check that both describe the same boleto. An E1_CODBAR that does not parse is
    ignored when E1_CODDIG is filled and valid: the letter only needs one good line.
    """
    line_text = (typeable_line or "").strip()
    barcode_text = (barcode or "").strip()
    if not line_text and not barcode_text:
        return None
    if not line_text:
        try:
            return parse_boleto(barcode_text)
        except BoletoError as exc:
            raise BoletoError(f"E1_CODBAR: {exc}") from exc
    try:
        boleto = parse_boleto(line_text)
    except BoletoError as exc:
        raise BoletoError(f"E1_CODDIG: {exc}") from exc
    if barcode_text:
        try:
            if _digits_of(barcode_text) == boleto.barcode:
                return boleto  # the usual case: E1_CODBAR is the line's own barcode
        except BoletoError:
            return boleto
        try:
            other = parse_boleto(barcode_text)
        except BoletoError:
            return boleto
        if other != boleto:
            raise BoletoError(
                f"E1_CODDIG and E1_CODBAR disagree: line {boleto.formatted_line} is barcode "
                f"{boleto.barcode}, E1_CODBAR holds {other.barcode}"
            )
    return boleto
