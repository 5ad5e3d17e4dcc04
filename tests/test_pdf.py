"""Printed letters (cobranca.pdf + templates/impressa): content, escaping, pages and the window."""

from __future__ import annotations

import http.server
import io
import re
import shutil
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest
from pdfminer.high_level import extract_pages
from pdfminer.layout import LTTextContainer, LTTextLine
from pypdf import PdfReader

from cobranca.boleto import barcode_to_line, mod11_barcode
from cobranca.config import Config, load_config
from cobranca.models import Address, Customer, Disposition, PlannedLetter, Title
from cobranca.payment import letter_payment
from cobranca.pdf import POOL_FROM, PdfConcatenation, PdfRenderer, render_pdf_one
from cobranca.render import TemplateProblem, amount, money
from conftest import LAYOUTS, TEMPLATES, offline_config_data, write_config

AS_OF = date(2026, 12, 4)
HOSTILE = '<b>Bar & "Zé"</b>'
CREDITOR_CNPJ = "11.444.777/0001-61"  # conftest's creditor, formatted
MM = 72 / 25.4  # PDF points per millimetre


def title(
    number: str,
    days_from_due: int,
    value: str,
    *,
    installment: str = "",
    interest_rate: str = "0",
    additions: str = "0.00",
    typeable_line: str = "",
) -> Title:
    due = AS_OF - timedelta(days=days_from_due)
    return Title(
        branch="01", prefix="NF", number=number, installment=installment, type="NF",
        customer_code="000123", customer_store="01", issue_date=due - timedelta(days=30),
        due_date=due, real_due_date=due, value=Decimal(value), balance=Decimal(value),
        abatements=Decimal("0.00"), situation="0", days_from_due=days_from_due,
        days_late=max(days_from_due, 0), interest_rate=Decimal(interest_rate),
        additions=Decimal(additions), typeable_line=typeable_line,
    )  # fmt: skip


def letter(
    name: str, titles: tuple[Title, ...], *, code: str = "000123", layout: str = "primeiro-aviso"
) -> PlannedLetter:
    customer = Customer(
        code=code, store="01", name=name, short_name=name[:20], tax_id="98765432000198",
        person_type="J", raw_emails="",
        address=Address("Rua das Flores, 123 - Sala 12", "Jardim Chapadão", "Campinas", "SP",
                        "13070000"),
        blocked=False,
    )  # fmt: skip
    return PlannedLetter(
        layout=layout, as_of=AS_OF, customer=customer, titles=titles, recipients=(),
        disposition=Disposition.PRINT, reason="no e-mail address",
    )  # fmt: skip


OVERDUE = title("000001001", 10, "1234.56", installment="A")
OVERDUE_2 = title("000001002", 5, "98765.40")
COMING = title("000001003", -2, "89.90")
SAMPLE = letter("Supermercado São Jorge Ltda", (OVERDUE, OVERDUE_2, COMING))
MANY = letter(
    "Transportadora Nossa Senhora Ltda",
    tuple(title(f"{2000 + i:09d}", 40 - i, f"{100 + i}.{i:02d}") for i in range(30)),
    code="000456",
)


def _barcode(cents: int) -> str:
    """A boleto barcode (Banco do Brasil) with the right general check digit."""
    body = "0019" + "1000" + f"{cents:010d}" + "0000001234567890123456789"
    return body[:4] + str(mod11_barcode(body)) + body[4:]


BOLETO_LINE = barcode_to_line(_barcode(126336))
BOLETO_FORMATTED = "00190.00009 01234.567897 01234.567897 1 10000000126336"
# 10 days late at 0,0333 % a day with a 2 % fine: 1.234,56 + 24,69 + 4,11 = 1.263,36.
CHARGED = title("000001001", 10, "1234.56", installment="A", interest_rate="0.0333",
                typeable_line=BOLETO_LINE)  # fmt: skip
ADJUSTED = title("000001004", 3, "500.00", additions="12.34")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path / "cobranca.yaml", offline_config_data(tmp_path)))


@pytest.fixture
def pix_config(tmp_path: Path) -> Config:
    """Layouts with a 2 % fine and Pix; the creditor with a Pix key."""
    layouts = [
        {**layout, "charges": {"fine_percent": 2}, "payment": {"pix": True}} for layout in LAYOUTS
    ]
    data = offline_config_data(tmp_path, layouts)
    data["creditor"]["pix"] = {
        "key": "11.444.777/0001-61",
        "merchant_name": "Credora Industria",
        "merchant_city": "Sao Paulo",
    }
    return load_config(write_config(tmp_path / "cobranca.yaml", data))


def pages_text(pdf: bytes) -> list[str]:
    """Each page's text, no-break spaces as plain spaces."""
    reader = PdfReader(io.BytesIO(pdf))
    return [(page.extract_text() or "").replace("\xa0", " ") for page in reader.pages]


def joined(
    letters: list[PlannedLetter],
    config: Config,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> bytes:
    """The letters as `cobranca print` writes them into one file, here into memory."""
    buffer = io.BytesIO()
    renderer = PdfRenderer(config)
    renderer.join(renderer.pdfs(letters, progress, workers), buffer)
    return buffer.getvalue()


def brl(value: Decimal) -> str:
    return money(value).replace("\xa0", " ")


def test_letter_has_customer_creditor_titles_and_amounts_in_pt_br(config: Config) -> None:
    pdf = render_pdf_one(SAMPLE, config)
    assert pdf.startswith(b"%PDF-")
    text = "\n".join(pages_text(pdf))
    assert SAMPLE.customer.name in text
    assert f"CNPJ {CREDITOR_CNPJ}" in text
    assert "Avenida Paulista, 1000" in text
    assert "São Paulo, 4 de dezembro de 2026." in text
    assert "Aviso de pagamento pendente" in text  # the layout's own texts (textos/primeiro-aviso)
    for t in SAMPLE.titles:
        assert t.number in text
        assert amount(t.value) in text  # the table's columns are headed "valores em R$"
    assert "98.765,40" in text  # thousands dot, decimal comma
    assert "valores em R$" in text
    assert brl(SAMPLE.total) in text
    assert "Títulos vencidos" in text and "Títulos a vencer" in text
    assert "Página 1 de 1" in text


def test_merged_pdf_starts_each_letter_on_a_new_page(config: Config) -> None:
    letters = [SAMPLE, MANY, letter("Padaria Bom Jesus ME", (COMING,), code="000789")]
    pdf = joined(letters, config)
    pages = pages_text(pdf)
    assert len(pages) >= len(letters)
    first_pages = [i for i, text in enumerate(pages) if "Página 1 de" in text]
    assert len(first_pages) == len(letters)
    for index, item in zip(first_pages, letters, strict=True):
        assert item.customer.name in pages[index]
        assert f"{item.customer.code} / loja" in pages[index]
    # Every page of a letter names only that letter's customer.
    bounds = [*first_pages, len(pages)]
    for item, start, end in zip(letters, bounds, bounds[1:], strict=False):
        for text in pages[start:end]:
            others = [x.customer.name for x in letters if x is not item]
            assert not any(name in text for name in others)


def test_joined_pdf_finds_every_object_where_its_cross_reference_says(config: Config) -> None:
    pdf = joined([SAMPLE, MANY], config)
    start = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    table = pdf[start:].split(b"trailer", 1)[0].split(b"\n")
    assert table[0] == b"xref"
    first, count = map(int, table[1].split())
    entries = table[2 : 2 + count]
    assert (first, entries[0]) == (0, b"0000000000 65535 f ")
    for number, entry in enumerate(entries[1:], 1):
        offset, generation, kind = entry.split()
        assert (generation, kind) == (b"00000", b"n")
        assert pdf[int(offset) :].startswith(b"%d 0 obj\n" % number), number
    reader = PdfReader(io.BytesIO(pdf), strict=True)
    assert len(reader.pages) == len(pages_text(render_pdf_one(SAMPLE, config))) + len(
        pages_text(render_pdf_one(MANY, config))
    )
    assert all(page.mediabox.width == pytest.approx(210 * MM, abs=1) for page in reader.pages)
    assert reader.metadata is not None
    assert reader.metadata.title == "Cartas de cobrança – Credora Indústria Ltda"
    assert (reader.metadata.author, reader.metadata.producer) == (
        "Credora Indústria Ltda",
        "cobranca",
    )


def _pdf_whose_page_inherits(text: str) -> bytes:
    """A one-page PDF whose media box (200 × 100 pt) and font are on its page tree, not on
    its page, as PDF allows (ISO 32000-1, 7.7.3.4)."""
    content = f"BT /F1 12 Tf 10 50 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 /MediaBox [0 0 200 100]"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    start = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        start,
    )
    return bytes(out)


def test_a_page_keeps_what_it_inherits_from_its_page_tree() -> None:
    buffer = io.BytesIO()
    joining = PdfConcatenation(buffer)
    joining.add(_pdf_whose_page_inherits("Primeira"))
    joining.add(_pdf_whose_page_inherits("Segunda"))
    assert joining.close() == 2
    reader = PdfReader(io.BytesIO(buffer.getvalue()), strict=True)
    assert [page.extract_text() for page in reader.pages] == ["Primeira", "Segunda"]
    for page in reader.pages:
        assert "/MediaBox" in page and "/Resources" in page  # on the page itself now
        assert (page.mediabox.width, page.mediabox.height) == (200, 100)


class _CountingSink:
    """A file that keeps nothing: how much was written, and when."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def test_joining_writes_each_letter_as_it_comes_and_keeps_none(config: Config) -> None:
    """A month-end paper run joins thousands of letters: memory must not grow with them."""
    part = render_pdf_one(SAMPLE, config)
    parts = 300
    sink = _CountingSink()
    joining = PdfConcatenation(sink)
    joining.add(part)  # pypdf's modules load: not what is measured
    tracemalloc.start()
    try:
        for _ in range(parts):
            before = sink.size
            joining.add(part)
            assert sink.size - before >= len(part) // 2  # the letter went out as it came
        assert joining.close() == (parts + 1) * len(PdfReader(io.BytesIO(part)).pages)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # pypdf's PdfWriter held every page until it wrote: ~100 KB of objects a letter.
    assert peak < parts * len(part) / 2, f"peak {peak} bytes for {parts} letters"


def test_many_titles_continue_on_numbered_pages_with_the_header_repeated(config: Config) -> None:
    pages = pages_text(render_pdf_one(MANY, config))
    assert len(pages) == 2
    assert "Página 1 de 2" in pages[0] and "Página 2 de 2" in pages[1]
    # The table header on each page (a header's words may wrap in its cell).
    assert all("Valor original" in " ".join(text.split()) for text in pages)
    assert "(continuação)" in pages[1] and MANY.customer.name in pages[1]
    text = "\n".join(pages)
    for t in MANY.titles:
        assert t.number in text
    assert "Total vencido (30 títulos)" in text
    assert brl(MANY.total) in text


def test_hostile_name_is_printed_literally_and_no_markup_leaks(config: Config) -> None:
    hostile = letter(HOSTILE, (OVERDUE,))
    text = "\n".join(pages_text(render_pdf_one(hostile, config)))
    assert text.count(HOSTILE) >= 2  # the window and the greeting
    assert "<" not in text.replace(HOSTILE, "")
    assert ">" not in text.replace(HOSTILE, "")
    assert "&amp;" not in text and "&lt;" not in text and "&quot;" not in text


def _text_lines(pdf: bytes) -> list[tuple[str, float, float, float, float]]:
    """First page's text lines: (text, left, top, right, bottom) in mm from the top-left corner."""
    page = next(extract_pages(io.BytesIO(pdf)))
    lines = []
    for box in page:
        if isinstance(box, LTTextContainer):
            for line in box:
                if isinstance(line, LTTextLine):
                    x0, y0, x1, y1 = line.bbox
                    lines.append((line.get_text().strip(), x0 / MM, (page.height - y1) / MM,
                                  x1 / MM, (page.height - y0) / MM))  # fmt: skip
    return lines


def test_address_sits_in_the_window_of_a_dl_envelope(config: Config) -> None:
    pdf = render_pdf_one(SAMPLE, config)
    lines = _text_lines(pdf)
    name = [line for line in lines if line[0] == SAMPLE.customer.name]
    assert len(name) == 1, lines
    _, left, top, _, _ = name[0]
    assert 15 <= left <= 30 and 40 <= top <= 60, name[0]
    # The whole address block fits the window (left 20 mm, top 45 mm, 90 x 45 mm, some slack).
    block = ["Rua das Flores, 123 - Sala 12", "Jardim Chapadão", "13070-000 Campinas – SP"]
    for wanted in block:
        found = [line for line in lines if line[0] == wanted]
        assert len(found) == 1, (wanted, lines)
        _, left, top, right, bottom = found[0]
        assert left >= 15 and right <= 112 and top >= 45 and bottom <= 92, found[0]
    # Nothing else is printed inside the window.
    window = [line for line in lines if line[1] < 105 and 50 <= line[2] and line[4] <= 90]
    assert {line[0] for line in window} == {SAMPLE.customer.name, *block}


def test_a_layout_can_have_its_own_print_template(config: Config, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    own = templates / "impressa" / "primeiro-aviso.html.j2"
    own.write_text("<html><body><p>Carta própria para {{ customer.name }}</p></body></html>")
    custom = config.model_copy(update={"templates_dir": templates})
    text = "\n".join(pages_text(render_pdf_one(SAMPLE, custom)))
    assert f"Carta própria para {SAMPLE.customer.name}" in text
    other = letter("Cliente do Lembrete", (COMING,), layout="lembrete-vencimento")
    assert "Lembrete de vencimento" in "\n".join(pages_text(render_pdf_one(other, custom)))


def test_missing_texts_are_named(config: Config, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "textos" / "primeiro-aviso.j2").unlink()
    custom = config.model_copy(update={"templates_dir": templates})
    with pytest.raises(TemplateProblem, match=r"textos/primeiro-aviso\.j2"):
        render_pdf_one(SAMPLE, custom)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[tuple[str, list[str]]]:
    _CountingHandler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _CountingHandler.hits
    finally:
        server.shutdown()
        server.server_close()


def test_templates_cannot_fetch_urls_or_read_files(
    config: Config, tmp_path: Path, web_server: tuple[str, list[str]]
) -> None:
    base, hits = web_server
    # A local file the server can read: were it loaded, its rule would print SEGREDO.
    secret = tmp_path / "secret.css"
    secret.write_text('h1::before { content: "SEGREDO"; }\np { display: none; }')
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    carta = templates / "impressa" / "carta.html.j2"
    source = carta.read_text(encoding="utf-8")
    source = source.replace(
        "<style>",
        f'<link rel="stylesheet" href="{base}/estilo.css">\n'
        f'<link rel="stylesheet" href="file://{secret}"><link rel="stylesheet" href="{secret}">\n'
        f"<style>\n@import url({base}/import.css);\n@import url(file://{secret});\n"
        f"@font-face {{ font-family: X; src: url({base}/fonte.ttf); }}\n",
    ).replace(
        "<h1>",
        f'<img src="{base}/logo.png"><img src="file://{secret}">'
        f'<pdf:insertpdf src="{base}/anexo.pdf"/><h1>',
    )
    carta.write_text(source, encoding="utf-8")
    custom = config.model_copy(update={"templates_dir": templates})
    text = "\n".join(pages_text(render_pdf_one(SAMPLE, custom)))
    assert SAMPLE.customer.name in text  # the letter still comes out
    assert hits == []
    assert "SEGREDO" not in text


def test_renderer_reuses_compiled_templates_across_letters(config: Config) -> None:
    renderer = PdfRenderer(config)
    html = renderer.html(SAMPLE)
    assert renderer.html(SAMPLE) == html
    assert "&lt;" not in html  # nothing to escape in this sample
    hostile_html = renderer.html(letter(HOSTILE, (OVERDUE,)))
    assert "&lt;b&gt;Bar &amp; &#34;Zé&#34;&lt;/b&gt;" in hostile_html
    assert re.search(r"<b>Bar", hostile_html) is None


def _images(pdf: bytes) -> list[str]:
    """Names of the images drawn on each page (pypdf's page.images)."""
    reader = PdfReader(io.BytesIO(pdf))
    return [image.name for page in reader.pages for image in page.images]


def test_charges_boleto_and_pix_are_printed(pix_config: Config) -> None:
    sample = letter("Supermercado São Jorge Ltda", (CHARGED, ADJUSTED, COMING))
    payment = letter_payment(sample, pix_config.layout(sample.layout), pix_config.creditor)
    assert payment.pix is not None and payment.problems == ()
    pdf = render_pdf_one(sample, pix_config)
    text = "\n".join(pages_text(pdf))
    flat = " ".join(text.split())

    # The overdue row: Saldo, Multa, Juros, Acrésc./Desc. (this letter has some), Total.
    assert "1.234,56 1.234,56 24,69 4,11 0,00 1.263,36" in flat
    assert "500,00 500,00 10,00 0,00 12,34 522,34" in flat  # 3 days: 2 % fine, no interest
    for header in ("Multa", "Juros", "Total", "Valor original", "Dias em atraso"):
        assert header in flat
    assert "Acrésc./ Desc." in flat
    assert brl(payment.all.total) in text  # "Total em aberto", in reais
    assert "Valores atualizados até 04/12/2026" in flat
    # The boleto line under its título.
    assert f"Linha digitável: {BOLETO_FORMATTED}" in flat
    assert flat.count("Linha digitável") == 1
    # Pix: the block, the amount, the receiver, and the code in 50-character lines.
    assert "Pague com Pix" in text
    assert f"Valor: {brl(payment.pix.amount)}" in flat
    assert "Recebedor: Credora Indústria Ltda – CNPJ 11.444.777/0001-61" in flat
    code = payment.pix.payload
    chunks = [code[i : i + 50] for i in range(0, len(code), 50)]
    assert len(chunks) >= 3
    lines = [line.strip() for line in text.splitlines()]
    for chunk in chunks:
        assert chunk in lines, chunk
    assert "Prefira ler o QR Code" in flat
    # The QR code is an image in the PDF (a data: URI the renderer accepts).
    assert len(_images(pdf)) == 1


def test_no_image_and_no_pix_without_pix(config: Config) -> None:
    pdf = render_pdf_one(letter("Supermercado São Jorge Ltda", (CHARGED, COMING)), config)
    flat = " ".join("\n".join(pages_text(pdf)).split())
    assert _images(pdf) == []
    assert "Pix" not in flat
    assert "Acrésc." not in flat  # no título with additions or deductions
    # No fine in this layout, but the título's own daily rate (E1_PORCJUR) still applies.
    assert "1.234,56 1.234,56 0,00 4,11 1.238,67" in flat
    assert "Valores atualizados até 04/12/2026" in flat


def test_note_says_when_no_charges_were_added(config: Config) -> None:
    flat = " ".join("\n".join(pages_text(render_pdf_one(SAMPLE, config))).split())
    assert "Os valores não incluem eventuais multa e juros por atraso" in flat
    assert "atualizados" not in flat


def _letters_enough_for_a_pool() -> list[PlannedLetter]:
    return [
        letter(f"Cliente {n:02d} Ltda", (OVERDUE, COMING) if n % 2 else (OVERDUE_2,),
               code=f"{n:06d}")
        for n in range(1, POOL_FROM + 5)
    ]  # fmt: skip


def test_worker_processes_print_what_one_process_prints(config: Config) -> None:
    """Two spawned processes render the letters; the merged PDF is the same, in order."""
    letters = _letters_enough_for_a_pool()
    done: list[int] = []
    pooled = joined(letters, config, done.append, workers=2)
    alone = joined(letters, config, workers=1)
    assert pages_text(pooled) == pages_text(alone)
    assert done == list(range(1, len(letters) + 1))
    starts = [text for text in pages_text(pooled) if "Página 1 de" in text]
    assert all(item.customer.name in text for item, text in zip(letters, starts, strict=True))


def test_a_template_error_in_a_worker_names_the_file_and_line(
    config: Config, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    own = templates / "impressa" / "primeiro-aviso.html.j2"
    own.write_text(
        "<html><body>\n<p>{{ customer.name }}</p>\n"
        "{% if customer.code == '000013' %}{{ customer.no_such_field }}{% endif %}\n</body></html>"
    )
    custom = config.model_copy(update={"templates_dir": templates})
    with pytest.raises(TemplateProblem) as pooled:
        joined(_letters_enough_for_a_pool(), custom, workers=2)
    assert (pooled.value.filename or "").endswith("impressa/primeiro-aviso.html.j2")
    assert pooled.value.line == 3
    assert "no_such_field" in str(pooled.value)
    with pytest.raises(TemplateProblem) as alone:
        joined(_letters_enough_for_a_pool(), custom, workers=1)
    assert str(pooled.value) == str(alone.value)
