"""Pix BR Code: the Banco Central manual's test vector, keys, text limits, CRC, QR round trip."""

from __future__ import annotations

import io
import random
from decimal import Decimal

import pytest
import segno
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cobranca.pix import (
    MAX_CITY,
    MAX_NAME,
    PixError,
    PixReceiver,
    _qr_symbol,
    ascii_text,
    brcode,
    classify_key,
    crc16_ccitt_false,
    format_amount,
    merchant_city,
    merchant_name,
    parse_brcode,
    pix_key,
    pix_receiver,
    qr_modules,
    qr_png,
    sanitize_txid,
)

MANUAL_KEY = "123e4567-e12b-12d1-a456-426655440000"
MANUAL_VECTOR = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
    "5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)


def acceptable_name(text: str) -> bool:
    """Whether merchant_name takes the text (what config validation relies on)."""
    try:
        merchant_name(text)
    except PixError:
        return False
    return True


def acceptable_city(text: str) -> bool:
    try:
        merchant_city(text)
    except PixError:
        return False
    return True


@pytest.fixture
def receiver() -> PixReceiver:
    return pix_receiver(MANUAL_KEY, "Fulano de Tal", "BRASILIA")


def decode_qr(png: bytes) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


# --- the manual ----------------------------------------------------------------------------


def test_manual_test_vector_byte_for_byte(receiver: PixReceiver) -> None:
    assert brcode(receiver, None) == MANUAL_VECTOR
    assert brcode(receiver, None, txid="") == MANUAL_VECTOR
    assert brcode(receiver, Decimal("0"), txid="***") == MANUAL_VECTOR


def test_manual_test_vector_parses() -> None:
    assert parse_brcode(MANUAL_VECTOR) == {
        "00": "01",
        "26": {"00": "br.gov.bcb.pix", "01": MANUAL_KEY},
        "52": "0000",
        "53": "986",
        "58": "BR",
        "59": "Fulano de Tal",
        "60": "BRASILIA",
        "62": {"05": "***"},
        "63": "1D3D",
    }


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"") == 0xFFFF


# --- amount --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("1025.655"), "1025.66"),  # half-up, not banker's rounding
        (Decimal("1025.645"), "1025.65"),
        (Decimal("1025.654"), "1025.65"),
        (Decimal("0.005"), "0.01"),
        (Decimal("0.01"), "0.01"),
        (Decimal("10"), "10.00"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("1234567.8"), "1234567.80"),  # no thousands separator
        (Decimal("999999999.99"), "999999999.99"),
    ],
)
def test_amount_format(amount: Decimal, text: str, receiver: PixReceiver) -> None:
    assert format_amount(amount) == text
    code = brcode(receiver, amount)
    assert f"54{len(text):02d}{text}5802BR" in code
    assert parse_brcode(code)["54"] == text


@pytest.mark.parametrize("amount", [None, Decimal("0"), Decimal("0.004"), Decimal("-0")])
def test_no_amount_omits_field_54(amount: Decimal | None, receiver: PixReceiver) -> None:
    code = brcode(receiver, amount)
    assert "54" not in parse_brcode(code)
    assert code == MANUAL_VECTOR


@pytest.mark.parametrize(
    "amount", [Decimal("-0.01"), Decimal("-0.001"), Decimal("NaN"), Decimal("Infinity")]
)
def test_bad_amounts(amount: Decimal, receiver: PixReceiver) -> None:
    with pytest.raises(PixError):
        brcode(receiver, amount)


def test_amount_too_long(receiver: PixReceiver) -> None:
    assert format_amount(Decimal("9999999999.99")) == "9999999999.99"  # 13, the field's limit
    with pytest.raises(PixError, match="13"):
        brcode(receiver, Decimal("10000000000.00"))


@pytest.mark.parametrize("amount", [10.5, 10, "10.50"])
def test_amount_must_be_decimal(amount: object, receiver: PixReceiver) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        brcode(receiver, amount)  # type: ignore[arg-type]


# --- name, city, description ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("São Paulo", "Sao Paulo"),
        ("AÇÚCAR & CIA", "ACUCAR & CIA"),
        ("Ç", "C"),
        ("Brasília", "Brasilia"),
        ("  Muitos    espaços  ", "Muitos espacos"),
        ("Linha\r\nquebrada\tcom tab", "Linha quebrada com tab"),
        ("Straße Œuvre", "Strasse OEuvre"),
        ("Empresa ☃ 😀 Ltda", "Empresa Ltda"),
        ("Ｆｕｌｌｗｉｄｔｈ", "Fullwidth"),
        ("nul\x00bell\x07esc\x1b[31m", "nulbellesc[31m"),
        ("日本", ""),
    ],
)
def test_ascii_text(raw: str, clean: str) -> None:
    assert ascii_text(raw) == clean


def test_name_and_city_keep_case_and_transliterate() -> None:
    r = pix_receiver("52998224725", "Açúcar Doce LTDA", "São Paulo")
    assert (r.name, r.city) == ("Acucar Doce LTDA", "Sao Paulo")
    code = brcode(r, Decimal("1.00"))
    assert code.isascii()
    assert "5916Acucar Doce LTDA6009Sao Paulo" in code


def test_limits_count_after_transliteration() -> None:
    assert merchant_name("É" * MAX_NAME) == "E" * MAX_NAME
    assert merchant_city("Ã" * MAX_CITY) == "A" * MAX_CITY
    assert acceptable_name("  " + "x" * MAX_NAME + "  ")
    assert acceptable_city("São José dos Pi")


def test_name_over_limit() -> None:
    name = "Comercial de Alimentos Ltda"  # 27
    assert not acceptable_name(name)
    with pytest.raises(PixError, match="at most 25"):
        merchant_name(name)
    with pytest.raises(PixError, match="at most 25"):
        pix_receiver(MANUAL_KEY, name, "BRASILIA")


def test_city_over_limit() -> None:
    city = "São José dos Pinhais"  # 20
    assert not acceptable_city(city)
    with pytest.raises(PixError, match="at most 15"):
        merchant_city(city)


@pytest.mark.parametrize("text", ["", "   ", "\r\n", "日本語"])
def test_empty_name_and_city(text: str) -> None:
    assert not acceptable_name(text) and not acceptable_city(text)
    with pytest.raises(PixError, match="empty"):
        merchant_name(text)
    with pytest.raises(PixError, match="empty"):
        merchant_city(text)


def test_hostile_name_cannot_forge_fields() -> None:
    # A name that tries to smuggle a line break and a fake CRC/TLV stays one field 59.
    r = pix_receiver(MANUAL_KEY, "Evil\r\n6304ABCD", "X\nY")
    assert (r.name, r.city) == ("Evil 6304ABCD", "X Y")
    parsed = parse_brcode(brcode(r, Decimal("5")))
    assert parsed["59"] == "Evil 6304ABCD"
    assert parsed["60"] == "X Y"
    assert "\r" not in brcode(r, None) and "\n" not in brcode(r, None)


def test_receiver_requires_normalized_values() -> None:
    with pytest.raises(PixError, match="pix_receiver"):
        PixReceiver(MANUAL_KEY.upper(), "Fulano de Tal", "BRASILIA")
    with pytest.raises(PixError, match="pix_receiver"):
        PixReceiver(MANUAL_KEY, "São", "BRASILIA")


def test_description(receiver: PixReceiver) -> None:
    code = brcode(receiver, Decimal("10"), description="Cobrança NF 123")
    assert parse_brcode(code)["26"] == {
        "00": "br.gov.bcb.pix",
        "01": MANUAL_KEY,
        "02": "Cobranca NF 123",
    }
    # 18 (GUI) + 40 (key) + 4 + 37 = 99: the longest description that still fits.
    longest = parse_brcode(brcode(receiver, None, description="d" * 37))["26"]
    assert isinstance(longest, dict) and longest["02"] == "d" * 37
    assert "02" not in parse_brcode(brcode(receiver, None, description="d" * 38))["26"]
    assert "02" not in parse_brcode(brcode(receiver, None, description=" \n "))["26"]


# --- txid ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "txid"),
    [
        ("", "***"),
        ("***", "***"),
        ("  -/ ", "***"),
        ("NF 001/2024-A", "NF0012024A"),
        ("ação123", "ao123"),
        ("A" * 30, "A" * 25),
        ("x\r\n6304", "x6304"),
    ],
)
def test_txid(raw: str, txid: str, receiver: PixReceiver) -> None:
    assert sanitize_txid(raw) == txid
    assert parse_brcode(brcode(receiver, Decimal("1"), txid=raw))["62"] == {"05": txid}


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind", "key"),
    [
        ("52998224725", "cpf", "52998224725"),
        ("529.982.247-25", "cpf", "52998224725"),
        (" 529 982 247 25 ", "cpf", "52998224725"),
        ("11444777000161", "cnpj", "11444777000161"),
        ("11.444.777/0001-61", "cnpj", "11444777000161"),
        ("12.ABC.345/01DE-35", "cnpj", "12ABC34501DE35"),  # alphanumeric CNPJ (July 2026)
        ("12abc34501de35", "cnpj", "12ABC34501DE35"),
        ("Financeiro@Empresa.COM.br", "email", "financeiro@empresa.com.br"),
        ("+55 (11) 99999-9999", "phone", "+5511999999999"),
        ("+5511999999999", "phone", "+5511999999999"),
        ("+55 11 3333.4444", "phone", "+551133334444"),  # landline, 10 digits
        (MANUAL_KEY, "evp", MANUAL_KEY),
        (MANUAL_KEY.upper(), "evp", MANUAL_KEY),
    ],
)
def test_valid_keys(raw: str, kind: str, key: str) -> None:
    assert classify_key(raw) == (kind, key)
    assert pix_key(raw) == key


def test_longest_email_fits_field_26() -> None:
    email = "a" * 64 + "@" + "b" * 8 + ".com"  # 77
    r = pix_receiver(email, "N", "C")
    assert parse_brcode(brcode(r, None))["26"]["01"] == email  # type: ignore[index]
    with pytest.raises(PixError, match="77"):
        pix_key("a" * 64 + "@" + "b" * 9 + ".com")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("52998224726", "CPF and its check digits"),  # bad CPF DV
        ("111.111.111-11", "CPF"),
        ("11999999999", "CPF"),  # 11 bare digits are a CPF; the message mentions +55
        ("11444777000162", "CNPJ"),
        ("12ABC34501DE36", "CNPJ"),
        ("1199999999", r"\+55"),  # phone without +55, 10 digits
        ("(11) 9999-9999", r"\+55"),
        ("5511999999999", r"\+55"),
        ("+1 212 555 0100", r"\+55"),
        ("+55 11 9999", r"\+55"),
        ("+55 11 99999-99999", r"\+55"),
        ("fulano@", "e-mail"),
        ("fulano@empresa", "e-mail"),
        ("a b@empresa.com", "e-mail"),
        ("fulano@@empresa.com", "e-mail"),
        ("123e4567-e12b-12d1-a456-42665544000", "random key"),  # 35 characters
        ("123e4567e12b-12d1-a456-426655440000x", "Pix key"),
        ("123e4567-e12b-12d1-a456-4266554400zz", "Pix key"),
        ("123e4567-e12b-12d1a-456-426655440000", "random key"),
        ("chave qualquer", "not a Pix key"),
        ("çpf", "characters"),
        ("529982247\n25", "characters"),
    ],
)
def test_bad_keys(raw: str, message: str) -> None:
    with pytest.raises(PixError, match=message):
        pix_key(raw)


def test_bare_eleven_digits_message_points_at_phone() -> None:
    with pytest.raises(PixError, match=r"mobile phone write it as \+55"):
        pix_key("11999999999")


# --- parse_brcode --------------------------------------------------------------------------


def test_round_trip(receiver: PixReceiver) -> None:
    code = brcode(receiver, Decimal("1025.655"), txid="FAT-000123/1")
    parsed = parse_brcode(code)
    assert parsed["54"] == "1025.66"
    assert parsed["62"] == {"05": "FAT0001231"}
    assert parsed["59"] == "Fulano de Tal"
    assert list(parsed) == ["00", "26", "52", "53", "54", "58", "59", "60", "62", "63"]


def test_every_single_character_change_is_detected(receiver: PixReceiver) -> None:
    code = brcode(receiver, Decimal("1025.66"), txid="FAT123")
    for i in range(len(code)):
        for replacement in {"0", "A", "x"} - {code[i]}:
            tampered = code[:i] + replacement + code[i + 1 :]
            with pytest.raises(PixError):
                parse_brcode(tampered)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (MANUAL_VECTOR[:-4] + "1D3E", "CRC"),
        (MANUAL_VECTOR[:-4] + "1d3d", None),  # lower-case hex CRC is accepted when reading
        (MANUAL_VECTOR[:-8], "6304"),
        ("", "000201"),
        ("0002016304", "6304"),
        (MANUAL_VECTOR.replace("BRASILIA", "BRASÍLIA"), "ASCII"),
        (MANUAL_VECTOR[2:], "000201"),
    ],
)
def test_parse_errors(payload: str, message: str | None) -> None:
    if message is None:
        assert parse_brcode(payload)["63"] == "1d3d"
        return
    with pytest.raises(PixError, match=message):
        parse_brcode(payload)


def _with_crc(body: str) -> str:
    body += "6304"
    return body + f"{crc16_ccitt_false(body.encode()):04X}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0002015999Fulano", "says 99"),  # length beyond the end, correct CRC
        ("000201260500141", "field 26"),  # nested length beyond the end
        ("0002015802BR5802BR", "twice"),
        ("0002015X02BR", "header"),
        ("00020162050503*", "field 62"),  # nested length beyond the end of 62
    ],
)
def test_inconsistent_lengths_with_valid_crc(body: str, message: str) -> None:
    with pytest.raises(PixError, match=message):
        parse_brcode(_with_crc(body))


# --- QR ------------------------------------------------------------------------------------


def test_qr_png_decodes_to_the_same_payload(receiver: PixReceiver) -> None:
    code = brcode(receiver, Decimal("1025.66"), txid="FAT0001231", description="Carta 42")
    png = qr_png(code)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert 200 < len(png) < 5000
    image = Image.open(io.BytesIO(png))
    assert 150 <= image.width == image.height <= 600
    assert decode_qr(png) == [code]


def test_qr_manual_vector_and_scale() -> None:
    small, big = qr_png(MANUAL_VECTOR, scale=2, border=4), qr_png(MANUAL_VECTOR, scale=10)
    assert decode_qr(small) == [MANUAL_VECTOR] and decode_qr(big) == [MANUAL_VECTOR]
    assert Image.open(io.BytesIO(big)).width > Image.open(io.BytesIO(small)).width


def test_qr_longest_code(receiver: PixReceiver) -> None:
    r = pix_receiver("a" * 64 + "@" + "b" * 8 + ".com", "N" * 25, "C" * 15)
    code = brcode(r, Decimal("9999999999.99"), txid="T" * 25)
    png = qr_png(code)
    assert len(png) < 5000
    assert decode_qr(png) == [code]


@pytest.mark.parametrize("payload", ["", "São"])
def test_qr_rejects_bad_payload(payload: str) -> None:
    with pytest.raises(PixError):
        qr_png(payload)


def _bitwise_crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE straight from its definition, to check the library one against."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


@given(st.binary(max_size=300))
def test_crc16_matches_its_definition(data: bytes) -> None:
    assert crc16_ccitt_false(data) == _bitwise_crc16(data)


# Payload lengths that fill each QR version 1..40 (byte mode, level M) exactly, or nearly:
# the most a version takes is its data codewords minus the mode and length header.
_QR_DATA_CODEWORDS_M = (
    16, 28, 44, 64, 86, 108, 124, 154, 182, 216, 254, 290, 334, 365, 415, 453, 507, 563,
    627, 669, 714, 782, 860, 914, 1000, 1062, 1128, 1193, 1267, 1373, 1455, 1541, 1631,
    1725, 1812, 1914, 1992, 2102, 2216, 2334,
)  # fmt: skip
_QR_FULL = [n - (2 if version < 10 else 3) for version, n in enumerate(_QR_DATA_CODEWORDS_M, 1)]


def _random_text(length: int, alphabet: str, seed: int) -> str:
    chooser = random.Random(seed)
    return "".join(chooser.choice(alphabet) for _ in range(length))


def _zxing_modules(payload: str) -> list[str]:
    """The same symbol drawn by zxing-cpp's writer (level M, mask 0), as rows of 0/1."""
    barcode = zxingcpp.create_barcode(
        payload, zxingcpp.BarcodeFormat.QRCode, ec_level="M", data_mask=0
    )
    image = barcode.to_image(scale=1, add_quiet_zones=False)
    height, width = image.shape[:2]
    pixels = bytes(memoryview(image))
    return [
        "".join("1" if pixels[y * width + x] < 128 else "0" for x in range(width))
        for y in range(height)
    ]


@pytest.mark.skipif(
    not hasattr(zxingcpp, "create_barcode"), reason="zxing-cpp without its writer (< 3.0)"
)
@pytest.mark.parametrize("version", range(1, 41))
def test_qr_symbol_is_module_for_module_what_zxing_writes(version: int) -> None:
    """An independent encoder gives the very same symbol: data, Reed-Solomon blocks and their
    interleaving, function patterns, format and version information. Lower-case letters only,
    so that zxing-cpp also writes it in byte mode, without ECI (as the module does)."""
    full = _QR_FULL[version - 1]
    for length in (full, full - 1, max(1, full - 9)):
        payload = _random_text(length, "abcdefghijklmnopqrstuvwxyz.@-", seed=length)
        rows = qr_modules(payload)
        assert len(rows) == 17 + 4 * version
        assert rows == _zxing_modules(payload)


@pytest.mark.parametrize("version", [1, 2, 6, 7, 8, 9, 10, 14, 21, 27, 40])
def test_qr_function_patterns_match_segno(version: int) -> None:
    """Finders, separators, timing and alignment patterns, format (level M, mask 0) and version
    information are where segno puts them. (Not the data: segno adds a zero byte before the
    pad codewords when the data ends on a byte boundary, which readers skip over.)"""
    payload = _random_text(_QR_FULL[version - 1], "abcdefghijklmnopqrstuvwxyz", seed=version)
    reference = segno.make_qr(payload, error="m", boost_error=False, mask=0, mode="byte")
    assert reference.version == version
    grid, order = _qr_symbol(version)
    rows = qr_modules(payload)
    fixed = 0
    for r, row in enumerate(reference.matrix):
        for c, value in enumerate(row):
            if grid[r][c] is not None:
                assert grid[r][c] == value == int(rows[r][c]), (r, c)
                fixed += 1
    assert fixed + len(order) == len(rows) ** 2


@pytest.mark.parametrize("version", [1, 5, 8, 9, 10, 20, 40])
@pytest.mark.parametrize(("scale", "border"), [(5, 4), (1, 4), (3, 0), (7, 2)])
def test_qr_png_of_every_size_decodes(version: int, scale: int, border: int) -> None:
    payload = _random_text(_QR_FULL[version - 1], "ABCDEFabcdef0123456789 .:/*-", seed=version)
    png = qr_png(payload, scale=scale, border=border)
    image = Image.open(io.BytesIO(png))
    assert image.size == ((17 + 4 * version + 2 * border) * scale,) * 2
    assert image.mode == "1"
    if border == 0:  # readers want a quiet zone: give it one to read the symbol itself
        framed = Image.new("1", (image.width + 8 * scale, image.height + 8 * scale), 1)
        framed.paste(image, (4 * scale, 4 * scale))
        image = framed
    assert [b.text for b in zxingcpp.read_barcodes(image)] == [payload]


def test_qr_png_pixels_are_the_modules_scaled() -> None:
    rows = qr_modules(MANUAL_VECTOR, border=4)
    image = Image.open(io.BytesIO(qr_png(MANUAL_VECTOR, scale=3, border=4))).convert("L")
    for y in range(image.height):
        for x in range(image.width):
            dark = rows[y // 3][x // 3] == "1"
            assert image.getpixel((x, y)) == (0 if dark else 255)


def test_qr_too_long_payload() -> None:
    with pytest.raises(PixError, match="too many"):
        qr_png("a" * 2332)
    assert qr_modules("a" * 2331)


# --- property ------------------------------------------------------------------------------

_LETTERS = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .&-'/")
    + list("áàâãéêíóôõúçÁÀÂÃÉÊÍÓÔÕÚÇ\r\n\t")
)
names = st.text(_LETTERS, min_size=1, max_size=40).filter(acceptable_name)
cities = st.text(_LETTERS, min_size=1, max_size=25).filter(acceptable_city)
amounts = st.decimals(
    min_value=Decimal("0.01"), max_value=Decimal("999999999.99"), places=2, allow_nan=False
)
keys = st.sampled_from(
    [MANUAL_KEY, "52998224725", "11444777000161", "12ABC34501DE35", "+5511999999999", "x@y.com"]
)


@settings(max_examples=300, deadline=None)
@given(
    key=keys,
    name=names,
    city=cities,
    amount=amounts,
    txid=st.text(max_size=40),
    description=st.text(max_size=40),
)
def test_property_round_trip(
    key: str, name: str, city: str, amount: Decimal, txid: str, description: str
) -> None:
    r = pix_receiver(key, name, city)
    code = brcode(r, amount, txid=txid, description=description)
    assert code.isascii() and code.isprintable()
    parsed = parse_brcode(code)
    assert Decimal(parsed["54"]) == amount  # type: ignore[arg-type]
    assert parsed["54"] == f"{amount:.2f}"
    assert parsed["59"] == r.name == ascii_text(name)
    assert parsed["60"] == r.city == ascii_text(city)
    assert parsed["62"] == {"05": sanitize_txid(txid)}
    assert parsed["26"]["01"] == r.key  # type: ignore[index]
    assert parsed["63"] == f"{crc16_ccitt_false(code[:-4].encode()):04X}"
    assert len(code) < 250
