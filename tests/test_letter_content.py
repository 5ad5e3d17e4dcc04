"""What a received letter says: charges to its date, the boleto line and a working Pix code.

The worked example of shared/protheus.md goes through the whole daily run (ERP rows → SMTP on
loopback): balance 1,000.00 due 03/03/2025 (Carnival; real due 05/03), reference 20/03/2025,
17 days late, fine 2% = 20.00, interest 5.66 with E1_PORCJUR = 0.0333 or 5.61 with
E1_VALJUR = 0.33. The QR image is read back with a QR decoder, not trusted.
"""

from __future__ import annotations

import io
import re
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from cobranca.boleto import parse_boleto
from cobranca.cli import main
from cobranca.config import ConfigError, load_config
from cobranca.pix import crc16_ccitt_false, parse_brcode
from cobranca.runner import run_layouts
from conftest import ErpWriter, SmtpServer, config_data, write_config

AS_OF = date(2025, 3, 20)
CARNIVAL_DUE = {"E1_VENCTO": "20250303", "E1_VENCREA": "20250305", "E1_EMISSAO": "20250201"}
VALID_LINE = "00190500954014481606906809350314337370000000100"  # Banco do Brasil's example
WRONG_LINE = VALID_LINE[:20] + "0" + VALID_LINE[21:]  # check digit of field 2 mistyped
PIX = {
    "key": "11.444.777/0001-61",
    "merchant_name": "Credora Indústria",
    "merchant_city": "São Paulo",
}


def shows(part: str, amount: str) -> bool:
    """The amount as a whole number in the letter ('20,00' is not found inside '1.020,00')."""
    return re.search(rf"(?<![\d.,]){re.escape(amount)}(?![\d])", part) is not None


def _layout(**overrides: Any) -> dict[str, Any]:
    layout = {
        "name": "atrasados",
        "schedule": "0 9 * * mon-fri",
        "template": "primeiro-aviso",
        "subject": "Aviso – {{ customer.name }}",
        "selection": {"days": {"min": 1}, "customers": {"include": ["900001"]}},
        "charges": {"fine_percent": 2},
        "payment": {"boleto": True, "pix": True},
    }
    return layout | overrides


def _config(tmp_path: Path, source: str, smtp: SmtpServer, **layout: Any) -> Path:
    data = config_data(
        source_url=source,
        history_url=f"sqlite:///{tmp_path / 'h.db'}",
        smtp=smtp,
        layouts=[_layout(**layout)],
    )
    data["creditor"]["pix"] = PIX
    return write_config(tmp_path / "c.yaml", data)


def _parts(message: EmailMessage) -> tuple[str, str, dict[str, bytes]]:
    """Text, HTML and inline images by Content-ID (without the angle brackets)."""
    text = html = ""
    images = {}
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "text/plain":
            text = part.get_content()
        elif kind == "text/html":
            html = part.get_content()
        elif kind == "image/png":
            images[str(part["Content-ID"]).strip("<>")] = part.get_content()
    return text, html, images


def test_received_letter_has_charges_boleto_and_a_pix_qr_that_decodes_to_its_code(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    keys = ErpWriter(demo_sqlite).customer(
        "900001", "Padaria Pão Quente Ltda", "contas@paoquente.com.br",
        {**CARNIVAL_DUE, "E1_VALOR": 1000.0, "E1_SALDO": 1000.0, "E1_PORCJUR": 0.0333,
         "E1_CODDIG": VALID_LINE},
        {**CARNIVAL_DUE, "E1_VALOR": 1000.0, "E1_SALDO": 1000.0, "E1_VALJUR": 0.33,
         "E1_CODDIG": WRONG_LINE},
    )  # fmt: skip
    config = load_config(_config(tmp_path, demo_sqlite, smtp_server))

    report = run_layouts(config, as_of=AS_OF)

    result = report.results[0]
    assert result.sent == 1, report.as_dict()
    # The mistyped boleto line is reported, naming the título and the wrong check digit...
    assert [key for key, _ in result.data_problems.entries] == [keys[1]]
    assert "check digit of field 2" in result.data_problems.entries[0][1]
    (mail,) = smtp_server.received
    text, html, images = _parts(mail.message)
    for part in (html, text.replace(" ", "")):
        # ...and never printed, while the valid one is, formatted.
        assert WRONG_LINE not in re.sub(r"\D", "", part)
    assert parse_boleto(VALID_LINE).formatted_line in html
    assert parse_boleto(VALID_LINE).formatted_line in text
    for amount in ("20,00", "5,66", "5,61", "1.025,66", "1.025,61", "2.051,27"):
        assert shows(html, amount) and shows(text, amount), amount

    # The HTML shows the QR by Content-ID, and that image is attached inline under that ID.
    (cid,) = re.findall(r'<img[^>]+src="cid:([^"]+)"', html)
    assert set(images) == {cid}
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(images[cid])))
    assert len(decoded) == 1
    payload = decoded[0].text
    # The text part carries the same code whole, on a line of its own, to copy and paste.
    assert payload in text.splitlines()
    fields = parse_brcode(payload)  # raises on a wrong CRC or length
    body, crc = payload[:-4], payload[-4:]
    assert crc == f"{crc16_ccitt_false(body.encode('ascii')):04X}"
    assert fields["54"] == "2051.27"  # the letter's total, fine and interest included
    assert fields["59"] == "Credora Industria" and fields["60"] == "Sao Paulo"
    account = fields["26"]
    assert isinstance(account, dict)
    assert account == {"00": "br.gov.bcb.pix", "01": "11444777000161"}
    assert payload.isascii()


def test_consumer_fine_is_capped_at_two_percent_in_the_letter(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    erp = ErpWriter(demo_sqlite)
    title = {**CARNIVAL_DUE, "E1_VALOR": 1000.0, "E1_SALDO": 1000.0}
    erp.customer("900001", "Maria Consumidora", "maria@example.com.br", title, person="F")
    erp.customer("900002", "Empresa Cliente Ltda", "contas@cliente.com.br", title, person="J")
    path = _config(
        tmp_path, demo_sqlite, smtp_server, charges={"fine_percent": 10},
        selection={"days": {"min": 1}, "customers": {"include": ["900001", "900002"]}},
    )  # fmt: skip

    assert run_layouts(load_config(path), as_of=AS_OF).results[0].sent == 2

    by_customer = {str(m.message["To"]): _parts(m.message)[1] for m in smtp_server.received}
    consumer = by_customer["maria@example.com.br"]
    company = by_customer["contas@cliente.com.br"]
    assert shows(consumer, "20,00") and shows(consumer, "1.020,00")
    assert not shows(consumer, "100,00")
    assert shows(company, "100,00") and shows(company, "1.100,00")


def test_layout_without_pix_sends_no_image_and_no_code(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    ErpWriter(demo_sqlite).customer(
        "900001", "Padaria Pão Quente Ltda", "contas@paoquente.com.br",
        {**CARNIVAL_DUE, "E1_VALOR": 1000.0, "E1_SALDO": 1000.0},
    )  # fmt: skip
    path = _config(tmp_path, demo_sqlite, smtp_server, payment={"boleto": True, "pix": False})

    assert run_layouts(load_config(path), as_of=AS_OF).results[0].sent == 1

    (mail,) = smtp_server.received
    text, html, images = _parts(mail.message)
    assert images == {}
    assert "cid:" not in html and "br.gov.bcb.pix" not in text + html


def _write(tmp_path: Path, creditor_pix: Any, **layout: Any) -> Path:
    data = config_data(
        source_url="sqlite:///x.db", history_url="sqlite:///h.db", outbox=tmp_path,
        layouts=[_layout(**layout)],
    )  # fmt: skip
    if creditor_pix is not None:
        data["creditor"]["pix"] = creditor_pix
    return write_config(tmp_path / "c.yaml", data)


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_pix_layout_without_creditor_pix_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, None)

    with pytest.raises(ConfigError) as error:
        load_config(path)

    message = str(error.value)
    assert f"{path}:{_line_of(path, 'pix: true')}:" in message
    assert "creditor.pix is missing" in message


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("key", "123.456.789-00", "CPF"),
        ("key", "11999998888", "+55"),
        ("merchant_name", "Credora Indústria e Comércio de Tecidos Ltda", "25"),
        ("merchant_city", "São José dos Campos do Norte", "15"),
    ],
)
def test_bad_pix_data_is_refused_naming_the_file_line_and_limit(
    tmp_path: Path, field: str, value: str, complaint: str
) -> None:
    path = _write(tmp_path, {**PIX, field: value})

    with pytest.raises(ConfigError) as error:
        load_config(path)

    message = str(error.value)
    assert f"{path}:{_line_of(path, field + ':')}:" in message
    assert f"creditor.pix.{field}" in message and complaint in message


def test_preview_shows_the_charges_and_warns_about_a_wrong_boleto(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ErpWriter(demo_sqlite).customer(
        "900001", "Padaria Pão Quente Ltda", "contas@paoquente.com.br",
        {**CARNIVAL_DUE, "E1_VALOR": 1000.0, "E1_SALDO": 1000.0, "E1_PORCJUR": 0.0333,
         "E1_CODDIG": WRONG_LINE},
    )  # fmt: skip
    path = _config(tmp_path, demo_sqlite, smtp_server)

    code = main(["preview", "atrasados", "--customer", "900001", "--as-of", "2025-03-20",
                 "--config", str(path)])  # fmt: skip

    out, err = capsys.readouterr()
    assert code == 0
    assert "1.025,66" in out and "br.gov.bcb.pix" in out
    assert "check digit of field 2" in err


@pytest.mark.parametrize(
    ("stored", "shown", "problem"),
    [
        ("12ABC34501DE35", "12.ABC.345/01DE-35", None),  # alphanumeric CNPJ (July 2026)
        ("01234567890", "012.345.678-90", None),  # a CPF keeps its leading zero
        ("11444777000162", "11444777000162", "CNPJ 11444777000162 has wrong check digits"),
    ],
)
def test_customer_tax_id_is_shown_formatted_only_when_valid(
    demo_sqlite: str,
    smtp_server: SmtpServer,
    tmp_path: Path,
    stored: str,
    shown: str,
    problem: str | None,
) -> None:
    ErpWriter(demo_sqlite).customer(
        "900001", "Padaria Pão Quente Ltda", "contas@paoquente.com.br",
        {**CARNIVAL_DUE, "E1_VALOR": 1000.0, "E1_SALDO": 1000.0}, tax_id=stored,
    )  # fmt: skip
    path = _config(tmp_path, demo_sqlite, smtp_server)

    result = run_layouts(load_config(path), as_of=AS_OF).results[0]

    (mail,) = smtp_server.received
    text, html, _ = _parts(mail.message)
    assert shown in text and shown in html
    found = [why for who, why in result.data_problems.entries if who == "900001/01"]
    assert found == ([f"A1_CGC: {problem} (printed as stored)"] if problem else [])
