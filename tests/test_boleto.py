"""Boleto typeable line and barcode: published examples, every check digit, the due factor.

The published examples are the Banco do Brasil one found in FEBRABAN/BB documentation and many
boleto libraries, the Itaú one of the boleto-utils README and the Bradesco one of BoletoPhp;
their check digits are worked out by hand below, not by the module under test.
"""

from __future__ import annotations

import unicodedata
from datetime import date, timedelta
from decimal import Decimal

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st

from cobranca.boleto import (
    Boleto,
    BoletoError,
    _digits_of,
    barcode_to_line,
    boleto_from_title,
    due_date_from_factor,
    line_to_barcode,
    mod10,
    mod11_barcode,
    parse_boleto,
)

BB_PRINTED = "00190.50095 40144.816069 06809.350314 3 37370000000100"
BB_LINE = "00190500954014481606906809350314337370000000100"
BB_BARCODE = "00193373700000001000500940144816060680935031"


def _reference_remainder(barcode44: str) -> int:
    """Mod-11 remainder of a barcode, written independently of the module: explicit weights."""
    without_dv = barcode44[:4] + barcode44[5:]
    weights = [2, 3, 4, 5, 6, 7, 8, 9] * 6  # 48 >= 43, applied from the right
    return sum(int(d) * w for d, w in zip(reversed(without_dv), weights, strict=False)) % 11


def _make_barcode(bank: str, factor: int, cents: int, free: str) -> str:
    """A valid barcode from its parts (test input only; expectations come from the parts)."""
    body = f"{bank}9{factor:04d}{cents:010d}{free}"  # without the check digit
    remainder = _reference_remainder(body[:4] + "0" + body[4:])
    dv = 11 - remainder
    return body[:4] + str(1 if dv >= 10 else dv) + body[4:]


# --- published examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "barcode", "bank", "amount", "due", "reference"),
    [
        (BB_PRINTED, BB_BARCODE, "001", Decimal("1.00"), date(2007, 12, 31), date(2008, 1, 1)),
        (  # boleto-utils README: Itaú, R$ 1.000,00 due 2019-05-31
            "34192.22009 00005.566385 51012.140003 6 79060000100000",
            "34196790600001000002220000005566385101214000",
            "341",
            Decimal("1000.00"),
            date(2019, 5, 31),
            date(2019, 6, 1),
        ),
        (  # BoletoPhp Bradesco sample: R$ 289,90 due 16/06/2016
            "23791.10006 60000.000079 89010.200304 4 68270000028990",
            "23794682700000289901100060000000078901020030",
            "237",
            Decimal("289.90"),
            date(2016, 6, 16),
            date(2016, 6, 16),
        ),
    ],
)
def test_published_examples(
    printed: str, barcode: str, bank: str, amount: Decimal, due: date, reference: date
) -> None:
    from_line = parse_boleto(printed)
    from_barcode = parse_boleto(barcode)
    assert from_line == from_barcode
    assert from_line.line == printed.replace(".", "").replace(" ", "")
    assert from_line.barcode == barcode
    assert from_line.formatted_line == printed
    assert from_line.bank == bank and from_line.currency == "9"
    assert from_line.amount == amount and str(from_line.amount) == str(amount)
    assert from_line.due_date_as_of(reference) == due
    assert barcode_to_line(barcode) == from_line.line
    assert line_to_barcode(from_line.line) == barcode


def test_bb_check_digits_worked_by_hand() -> None:
    # Field 1, 001905009 with weights 2,1,2,1,2,1,2,1,2: 0,0,2,9,0,5,0,0,18→9 → 25 → DV 5.
    assert sum([0, 0, 2, 9, 0, 5, 0, 0, 1 + 8]) == 25
    assert mod10("001905009") == 5 == int(BB_LINE[9])
    # Field 2, 4014481606 with weights 1,2,…: 4,0,1,8,4,16→7,1,12→3,0,12→3 → 31 → DV 9.
    assert sum([4, 0, 1, 8, 4, 1 + 6, 1, 1 + 2, 0, 1 + 2]) == 31
    assert mod10("4014481606") == 9 == int(BB_LINE[20])
    # Field 3, 0680935031: 0,12→3,8,0,9,6,5,0,3,2 → 36 → DV 4.
    assert sum([0, 1 + 2, 8, 0, 9, 6, 5, 0, 3, 2]) == 36
    assert mod10("0680935031") == 4 == int(BB_LINE[31])
    # Barcode: the weighted sum of the 43 digits is 712 = 64 × 11 + 8, so DV = 11 − 8 = 3.
    assert _reference_remainder(BB_BARCODE) == 712 - 64 * 11 == 8
    assert mod11_barcode(BB_BARCODE[:4] + BB_BARCODE[5:]) == 3 == int(BB_BARCODE[4])


def test_mod10_small_cases() -> None:
    assert mod10("9") == 1  # 9 × 2 = 18 → 1 + 8 = 9 → 10 − 9 = 1
    assert mod10("5") == 9  # 5 × 2 = 10 → 1 + 0 = 1 → 10 − 1 = 9
    assert mod10("19") == 0  # 9 × 2 = 18 → 9, plus 1 × 1 → 10 → (10 − 0) mod 10 = 0
    assert mod10("0") == 0


# --- typed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        BB_PRINTED,
        BB_LINE,
        "  00190.50095  40144.816069\t06809.350314-3 37370000000100 ",  # C48 padding, tabs, dash
        "00190.50095.40144.816069.06809.350314.3.37370000000100\n",
    ],
)
def test_typeable_line_with_punctuation(typed: str) -> None:
    boleto = parse_boleto(typed)
    assert boleto.line == BB_LINE and boleto.barcode == BB_BARCODE
    assert boleto.formatted_line == "00190.50095 40144.816069 06809.350314 3 37370000000100"


def test_barcode_gives_the_same_line() -> None:
    assert barcode_to_line(BB_BARCODE) == BB_LINE
    assert parse_boleto(f" {BB_BARCODE}    ") == parse_boleto(BB_PRINTED)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "field", "right"),
    [(9, 1, 5), (20, 2, 9), (31, 3, 4)],
)
def test_wrong_field_check_digit_names_the_field(position: int, field: int, right: int) -> None:
    wrong = (right + 3) % 10
    line = BB_LINE[:position] + str(wrong) + BB_LINE[position + 1 :]
    message = f"typeable line: check digit of field {field} is {wrong}, expected {right}"
    with pytest.raises(BoletoError) as caught:
        parse_boleto(line)
    assert str(caught.value) == message
    with pytest.raises(BoletoError, match=message):
        line_to_barcode(line)


def test_wrong_data_digit_is_blamed_on_its_field() -> None:
    line = BB_LINE[:12] + "5" + BB_LINE[13:]  # 4014… → 4054…, field 2
    with pytest.raises(BoletoError, match=r"check digit of field 2 is 9, expected \d"):
        parse_boleto(line)


def test_wrong_general_check_digit_in_line() -> None:
    line = BB_LINE[:32] + "4" + BB_LINE[33:]
    with pytest.raises(BoletoError) as caught:
        parse_boleto(line)
    assert str(caught.value) == "typeable line: general check digit (field 4) is 4, expected 3"


def test_wrong_general_check_digit_in_barcode() -> None:
    barcode = BB_BARCODE[:4] + "4" + BB_BARCODE[5:]
    with pytest.raises(BoletoError) as caught:
        parse_boleto(barcode)
    assert str(caught.value) == "barcode: general check digit is 4, expected 3"
    with pytest.raises(BoletoError, match="barcode: general check digit is 4, expected 3"):
        barcode_to_line(barcode)


def test_amount_changed_in_line_is_caught_by_the_general_check_digit() -> None:
    line = BB_LINE[:-3] + "200"  # R$ 1,00 → R$ 2,00
    with pytest.raises(BoletoError, match=r"general check digit \(field 4\) is 3, expected"):
        parse_boleto(line)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BB_LINE[:-2], "47 or 44 digits expected, got 45"),
        (BB_LINE + "0", "47 or 44 digits expected, got 48"),
        (BB_BARCODE[:-1], "47 or 44 digits expected, got 43"),
        ("", "47 or 44 digits expected, got 0"),
        (" . ", "47 or 44 digits expected, got 0"),
        (
            "8" + "0" * 47,
            "48 digits starting with 8 is a utility or tax payment (arrecadação), "
            "not a bank boleto",
        ),
        (
            "8" + "0" * 43,
            "a barcode starting with 8 is a utility or tax payment (arrecadação), "
            "not a bank boleto",
        ),
    ],
)
def test_wrong_length(text: str, message: str) -> None:
    with pytest.raises(BoletoError) as caught:
        parse_boleto(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0019O.50095 40144.816069 06809.350314 3 37370000000100", "non-digit characters: 'O'"),
        ("00190.50095 4014l.8l6069 06809.350314 3 37370000000100", "non-digit characters: 'l'"),
        ("R$ 00190500954014481606906809350314337370000000100", "non-digit characters: 'R', '$'"),
        ("０0190500954014481606906809350314337370000000100", "non-digit characters: '０'"),
        ("²0190500954014481606906809350314337370000000100", "non-digit characters: '²'"),
    ],
)
def test_letters_and_other_digits_are_rejected(text: str, message: str) -> None:
    with pytest.raises(BoletoError) as caught:
        parse_boleto(text)
    assert str(caught.value) == message


def test_helpers_reject_non_digits() -> None:
    for call in (mod10, mod11_barcode, barcode_to_line, line_to_barcode):
        with pytest.raises(BoletoError, match="non-digit characters"):
            call("12 4")
    with pytest.raises(BoletoError, match="barcode: 44 digits expected, got 47"):
        barcode_to_line(BB_LINE)
    with pytest.raises(BoletoError, match="typeable line: 47 digits expected, got 44"):
        line_to_barcode(BB_BARCODE)


def test_boleto_must_be_one_boleto() -> None:
    itau = "34196790600001000002220000005566385101214000"
    with pytest.raises(BoletoError, match="typeable line and barcode are not the same boleto"):
        Boleto(BB_LINE, itau)
    with pytest.raises(BoletoError, match="check digit of field 3 is 5, expected 4"):
        Boleto(BB_LINE[:31] + "5" + BB_LINE[32:], BB_BARCODE)
    assert Boleto(BB_LINE, BB_BARCODE) == parse_boleto(BB_BARCODE)


# --- mod 11: 0, 10 and 11 become 1 --------------------------------------------------------


def test_mod11_results_10_and_11_become_1() -> None:
    # The BB barcode's sum is 712 (remainder 8); its last digit (1) has weight 2.
    # Last digit 8: 712 + 2 × 7 = 726 = 66 × 11, remainder 0, 11 − 0 = 11 → 1.
    # Last digit 3: 712 + 2 × 2 = 716 = 65 × 11 + 1, remainder 1, 11 − 1 = 10 → 1.
    # Last digit 2: 712 + 2 × 1 = 714 = 64 × 11 + 10, remainder 10, 11 − 10 = 1 (plain).
    for last, total in (("8", 726), ("3", 716), ("2", 714)):
        barcode = BB_BARCODE[:4] + "1" + BB_BARCODE[5:-1] + last
        assert _reference_remainder(barcode) == total % 11
        assert mod11_barcode(barcode[:4] + barcode[5:]) == 1
        assert parse_boleto(barcode).barcode == barcode
        zero = barcode[:4] + "0" + barcode[5:]
        with pytest.raises(BoletoError, match="barcode: general check digit is 0, expected 1"):
            parse_boleto(zero)
    assert (726, 716, 714) == (66 * 11, 65 * 11 + 1, 64 * 11 + 10)


def test_mod11_collapse_lets_one_amount_change_through() -> None:
    """FEBRABAN's rule gives remainders 0, 1 and 10 the same digit (1), so field 5 (factor and
    amount, which has no check digit of its own) can take a single-digit change unnoticed. The
    last amount digit has weight 3 and 3 × 4 = 12 ≡ 1 (mod 11): R$ 1,00 (remainder 0) and
    R$ 1,04 (remainder 1) both carry check digit 1. Nothing can catch this; the test documents
    it."""
    first = BB_BARCODE[:4] + "1" + BB_BARCODE[5:-1] + "8"  # remainder 0, see above
    second = first[:18] + "4" + first[19:]
    assert (_reference_remainder(first), _reference_remainder(second)) == (0, 1)
    assert parse_boleto(first).amount == Decimal("1.00")
    assert parse_boleto(second).amount == Decimal("1.04")


# --- amount and due date ------------------------------------------------------------------


def test_amount_decoding() -> None:
    free = "0" * 25
    assert parse_boleto(_make_barcode("001", 0, 0, free)).amount == Decimal("0.00")
    assert str(parse_boleto(_make_barcode("001", 0, 0, free)).amount) == "0.00"
    assert parse_boleto(_make_barcode("001", 0, 5, free)).amount == Decimal("0.05")
    top = parse_boleto(_make_barcode("001", 0, 9_999_999_999, free))
    assert top.amount == Decimal("99999999.99")


def test_factor_zero_means_no_due_date() -> None:
    boleto = parse_boleto(_make_barcode("237", 0, 12345, "1" * 25))
    assert boleto.due_factor == 0
    assert boleto.due_date_as_of(date(2026, 12, 4)) is None
    assert boleto.due_date is None
    assert due_date_from_factor(0, date(2000, 1, 1)) is None


@pytest.mark.parametrize(
    ("factor", "reference", "due"),
    [
        # FEBRABAN's own table: 1000 = 03/07/2000, 1001 = 04/07/2000, 5316 = 27/04/2012,
        # 9999 = 21/02/2025 (end of the first cycle); 1000 again = 22/02/2025.
        (1000, date(2001, 1, 1), date(2000, 7, 3)),
        (1001, date(2001, 1, 1), date(2000, 7, 4)),
        (5316, date(2012, 5, 1), date(2012, 4, 27)),
        (9999, date(2025, 2, 21), date(2025, 2, 21)),
        (9999, date(2025, 3, 1), date(2025, 2, 21)),  # overdue right before the rollover
        (1000, date(2025, 3, 1), date(2025, 2, 22)),  # first day after it
        (1002, date(2025, 2, 20), date(2025, 2, 24)),  # issued before, due after the rollover
        (1000, date(2030, 1, 1), date(2025, 2, 22)),
        (9999, date(2049, 10, 13), date(2049, 10, 13)),  # end of the second cycle
        (1000, date(2049, 10, 14), date(2049, 10, 14)),  # third cycle
        (7906, date(2028, 6, 1), date(2019, 5, 31)),  # 3,289 days overdue: still found
        (7906, date(2030, 1, 1), date(2044, 1, 20)),  # 3,868 days: read as the next cycle
        (1000, date(1990, 1, 1), date(2000, 7, 3)),  # never before the first cycle
        (1, date(2025, 3, 1), date(1997, 10, 8)),  # factors below 1000 exist only before 2000
        (999, date(2040, 1, 1), date(2000, 7, 2)),
    ],
)
def test_due_date_across_the_rollover(factor: int, reference: date, due: date) -> None:
    assert due_date_from_factor(factor, reference) == due
    boleto = parse_boleto(_make_barcode("341", factor, 100, "2" * 25))
    assert boleto.due_factor == factor
    assert boleto.due_date_as_of(reference) == due


def test_due_date_window_edges() -> None:
    """A factor reads as the date from 3,499 days before to 5,500 days after the reference."""
    reference = date(2026, 12, 4)
    # 2026-12-04 − 3,499 days = 2017-05-06, factor 7151 (7151 days after 1997-10-07);
    # 2026-12-04 + 5,500 days = 2041-12-25, factor 7150 (1000 + 6150 days after 2025-02-22).
    assert reference - timedelta(days=3499) == date(2017, 5, 6)
    assert reference + timedelta(days=5500) == date(2041, 12, 25)
    assert date(1997, 10, 7) + timedelta(days=7151) == date(2017, 5, 6)
    assert date(2025, 2, 22) + timedelta(days=6150) == date(2041, 12, 25)
    assert due_date_from_factor(7151, reference) == date(2017, 5, 6)  # first day inside
    assert due_date_from_factor(7150, reference) == date(2041, 12, 25)  # not 2017-05-05
    assert due_date_from_factor(7150, reference - timedelta(days=1)) == date(2017, 5, 5)


def test_due_factor_out_of_range() -> None:
    with pytest.raises(BoletoError, match="due factor must be 0 to 9999, got 10000"):
        due_date_from_factor(10000, date(2025, 1, 1))


def test_due_date_property_reads_as_of_today() -> None:
    boleto = parse_boleto(_make_barcode("001", 1000, 100, "3" * 25))
    with time_machine.travel(date(2025, 3, 1), tick=False):
        assert boleto.due_date == date(2025, 2, 22)
    with time_machine.travel(date(2005, 3, 1), tick=False):
        assert boleto.due_date == date(2000, 7, 3)


# --- E1_CODDIG / E1_CODBAR ----------------------------------------------------------------


def test_title_without_boleto() -> None:
    assert boleto_from_title(" " * 48, " " * 44) is None
    assert boleto_from_title("", "") is None
    assert boleto_from_title(None, None) is None


def test_title_with_line_only_barcode_only_or_barcode_in_coddig() -> None:
    expected = parse_boleto(BB_LINE)
    assert boleto_from_title(BB_PRINTED.ljust(48), " " * 44) == expected
    assert boleto_from_title(" " * 48, BB_BARCODE) == expected
    assert boleto_from_title(BB_BARCODE.ljust(48), " " * 44) == expected  # barcode in E1_CODDIG


def test_title_with_both_agreeing() -> None:
    assert boleto_from_title(BB_PRINTED.ljust(48), BB_BARCODE) == parse_boleto(BB_BARCODE)
    assert boleto_from_title(BB_LINE, BB_LINE) == parse_boleto(BB_BARCODE)


def test_title_with_both_disagreeing() -> None:
    itau = "34196790600001000002220000005566385101214000"
    with pytest.raises(BoletoError) as caught:
        boleto_from_title(BB_PRINTED, itau)
    assert str(caught.value) == (
        f"E1_CODDIG and E1_CODBAR disagree: line {BB_PRINTED} is barcode {BB_BARCODE}, "
        f"E1_CODBAR holds {itau}"
    )


def test_title_errors_name_the_column() -> None:
    bad_line = BB_LINE[:9] + "0" + BB_LINE[10:]
    with pytest.raises(BoletoError) as caught:
        boleto_from_title(bad_line, BB_BARCODE)
    assert str(caught.value) == "E1_CODDIG: typeable line: check digit of field 1 is 0, expected 5"
    with pytest.raises(BoletoError) as caught:
        boleto_from_title("", BB_BARCODE[:-1])
    assert str(caught.value) == "E1_CODBAR: 47 or 44 digits expected, got 43"


def test_title_with_good_line_ignores_unreadable_barcode() -> None:
    assert boleto_from_title(BB_PRINTED, "NAO CONSTA") == parse_boleto(BB_LINE)
    assert boleto_from_title(BB_PRINTED, BB_BARCODE[:-1] + "0") == parse_boleto(BB_LINE)


# --- properties ---------------------------------------------------------------------------

banks = st.from_regex(r"[0-79][0-9]{2}", fullmatch=True)
free_fields = st.from_regex(r"[0-9]{25}", fullmatch=True)
factors = st.integers(0, 9999)
cents = st.integers(0, 9_999_999_999)


@given(banks, factors, cents, free_fields)
def test_round_trip(bank: str, factor: int, amount: int, free: str) -> None:
    """barcode → line → barcode and line → barcode → line give back the input; the parts decode
    to what went in."""
    barcode = _make_barcode(bank, factor, amount, free)
    line = barcode_to_line(barcode)
    assert len(line) == 47
    assert line_to_barcode(line) == barcode
    assert barcode_to_line(line_to_barcode(line)) == line
    boleto = parse_boleto(line)
    assert boleto == parse_boleto(barcode) == parse_boleto(boleto.formatted_line)
    assert boleto.bank == bank and boleto.free_field == free and boleto.due_factor == factor
    assert boleto.amount == Decimal(amount) / 100


@given(
    banks,
    factors,
    cents,
    free_fields,
    st.integers(0, 46),
    st.integers(1, 9),
)
def test_single_digit_change_in_line(
    bank: str, factor: int, amount: int, free: str, position: int, shift: int
) -> None:
    """Changing any one digit of fields 1 to 4 (positions 0 to 32) is always rejected: mod 10
    catches every single-digit change of a field (the doubled digit's digit sum is a permutation
    of 0..9) and field 4 is the check digit itself. In field 5 (positions 33 to 46, no digit of
    its own) the mod-11 remainder always changes, as 11 is prime and weights are 2..9, so the
    change is rejected unless both remainders are among 0, 1 and 10, which all give digit 1."""
    line = barcode_to_line(_make_barcode(bank, factor, amount, free))
    changed = line[:position] + str((int(line[position]) + shift) % 10) + line[position + 1 :]
    if position <= 32:
        with pytest.raises(BoletoError):
            parse_boleto(changed)
        return
    before = _reference_remainder(line_to_barcode(line))
    c = changed
    changed_barcode = c[0:4] + c[32:47] + c[4:9] + c[10:20] + c[21:31]
    after = _reference_remainder(changed_barcode)
    assert before != after
    if {before, after} <= {0, 1, 10}:
        assert parse_boleto(changed).line == changed  # undetectable by design
    else:
        with pytest.raises(BoletoError, match=r"general check digit \(field 4\)"):
            parse_boleto(changed)


# --- the fast paths give what the plain definitions give -----------------------------------


def _mod10_by_definition(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        product = int(char) * (2 if position % 2 == 0 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10


def _mod11_by_definition(digits: str) -> int:
    total = sum(int(char) * (2 + position % 8) for position, char in enumerate(reversed(digits)))
    result = 11 - total % 11
    return 1 if result in (0, 10, 11) else result


@given(st.text(alphabet="0123456789", max_size=60))
def test_check_digits_match_their_definitions(digits: str) -> None:
    assert mod10(digits) == _mod10_by_definition(digits)
    assert mod11_barcode(digits) == _mod11_by_definition(digits)


@given(st.text(alphabet=st.sampled_from("0123456789 .-/\t\u00a0\u2007xX+$,;:_()"), max_size=60))
def test_digits_of_typed_text_as_the_character_rules_say(text: str) -> None:
    """Digits kept; spaces and punctuation (Unicode Z and P) dropped; anything else refused."""
    rejected = [
        c
        for c in text
        if not ("0" <= c <= "9" or c.isspace() or unicodedata.category(c)[0] in "PZ")
    ]
    if rejected:
        with pytest.raises(BoletoError, match="non-digit"):
            _digits_of(text)
    else:
        assert _digits_of(text) == "".join(c for c in text if "0" <= c <= "9")


def test_title_with_its_own_barcode_and_with_a_different_one() -> None:
    boleto = parse_boleto(BB_PRINTED)
    assert boleto_from_title(BB_PRINTED, boleto.barcode) == boleto
    assert boleto_from_title(BB_PRINTED, f"  {boleto.barcode}  ") == boleto
    assert boleto_from_title(BB_PRINTED, "not a barcode") == boleto  # unreadable: ignored
    other = boleto.barcode[:-1] + str((int(boleto.barcode[-1]) + 1) % 10)
    other = other[:4] + str(mod11_barcode(other[:4] + other[5:])) + other[5:]
    with pytest.raises(BoletoError, match="disagree"):
        boleto_from_title(BB_PRINTED, other)
