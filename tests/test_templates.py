"""The shipped letter templates (templates/): content, escaping, structure and e-mail safety."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cobranca.boleto import barcode_to_line, mod11_barcode
from cobranca.config import Creditor, Layout
from cobranca.models import Address, Customer, Disposition, PlannedLetter, RenderedLetter, Title
from cobranca.payment import letter_payment
from cobranca.render import (
    ComposedLetter,
    TemplateProblem,
    compose,
    letter_context,
    load_templates,
    make_environment,
    money,
)

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
LAYOUTS = ("lembrete-vencimento", "primeiro-aviso", "segundo-aviso", "aviso-final")
AS_OF = date(2025, 3, 5)
HOSTILE_NAME = '<b>Bar & Lanches "Zé"</b>'
SUBJECT = "Aviso – {{ creditor.name }}"
MESSAGE_ID = "<20250305090000.abc123@credora.example.com.br>"

CREDITOR_DATA: dict[str, Any] = {
    "name": "Distribuidora Exemplo Ltda.",
    "tax_id": "12345678000195",
    "address": "Av. Paulista, 1000, 10º andar",
    "city": "São Paulo",
    "state": "SP",
    "zip_code": "01310100",
    "phone": "(11) 3000-4000",
    "email": "financeiro@exemplo.com.br",
    "website": "www.exemplo.com.br",
}
CREDITOR = Creditor.model_validate(CREDITOR_DATA)
PIX_CREDITOR = Creditor.model_validate(
    {
        **CREDITOR_DATA,
        "pix": {
            "key": "12.345.678/0001-95",
            "merchant_name": "Distribuidora Exemplo",
            "merchant_city": "São Paulo",
        },
    }
)


def make_layout(
    name: str,
    *,
    fine_percent: str = "0",
    interest_percent_per_month: str | None = None,
    boleto: bool = True,
    pix: bool = False,
) -> Layout:
    return Layout.model_validate(
        {
            "name": name,
            "schedule": "0 9 * * mon-fri",
            "template": name,
            "subject": SUBJECT,
            "selection": {"days": {"min": 1}},
            "charges": {
                "fine_percent": fine_percent,
                "interest_percent_per_month": interest_percent_per_month,
            },
            "payment": {"boleto": boleto, "pix": pix},
        }
    )


def make_title(
    number: str,
    real_due: date,
    value: str,
    *,
    prefix: str = "NF",
    installment: str = "",
    abatements: str = "0.00",
    interest_rate: str = "0",
    additions: str = "0.00",
    deductions: str = "0.00",
    typeable_line: str = "",
) -> Title:
    days = (AS_OF - real_due).days
    return Title(
        branch="01",
        prefix=prefix,
        number=number,
        installment=installment,
        type="NF",
        customer_code="000123",
        customer_store="01",
        issue_date=real_due - timedelta(days=30),
        due_date=real_due,
        real_due_date=real_due,
        value=Decimal(value),
        balance=Decimal(value),
        abatements=Decimal(abatements),
        situation="0",
        days_from_due=days,
        days_late=max(days, 0),
        interest_rate=Decimal(interest_rate),
        additions=Decimal(additions),
        deductions=Decimal(deductions),
        typeable_line=typeable_line,
    )


def make_barcode(cents: int, free_field: str = "0000001234567890123456789") -> str:
    """A Banco do Brasil boleto barcode with the right general check digit (mod 11)."""
    body = "001" + "9" + "1000" + f"{cents:010d}" + free_field
    return body[:4] + str(mod11_barcode(body)) + body[4:]


# A valid typeable line (47 digits) and the same line with field 1's check digit wrong.
BOLETO_LINE = barcode_to_line(make_barcode(102566))
BOLETO_FORMATTED = "00190.00009 01234.567897 01234.567897 6 10000000102566"
BAD_BOLETO_LINE = BOLETO_LINE[:9] + str((int(BOLETO_LINE[9]) + 1) % 10) + BOLETO_LINE[10:]

# Two overdue títulos (one with an abatement: saldo 900,00) and one coming due.
OVERDUE_1 = make_title("000001001", date(2025, 2, 10), "1234.56", installment="A")
OVERDUE_2 = make_title("000001002", date(2025, 2, 20), "1000.00", abatements="100.00")
COMING_1 = make_title("000001003", date(2025, 3, 8), "89.90", prefix="DP", installment="1")
# 17 days late, 0.0333 % a day in the título (E1_PORCJUR): with a 2 % fine, the letter owes
# 1.000,00 + 20,00 (multa) + 5,66 (juros: 1000 x 17 x 0,000333 = 5,661) = 1.025,66.
LATE = make_title("000002001", date(2025, 2, 16), "1000.00", interest_rate="0.0333")

TOTAL_OVERDUE = "R$\xa02.134,56"
TOTAL_COMING = "R$\xa089,90"
TOTAL_ALL = "R$\xa02.224,46"
# What each título's row shows in both parts (the Saldo and Total columns, no "R$")...
AMOUNTS = {
    OVERDUE_1.number: ["1.234,56"],
    OVERDUE_2.number: ["900,00"],
    COMING_1.number: ["89,90"],
}
# ... and the original value, in the HTML.
VALUES = {OVERDUE_1.number: "1.234,56", OVERDUE_2.number: "1.000,00", COMING_1.number: "89,90"}
# The títulos each layout normally gets: a reminder only has títulos not yet due.
SAMPLE_TITLES = {
    "lembrete-vencimento": (COMING_1,),
    "primeiro-aviso": (OVERDUE_1, OVERDUE_2, COMING_1),
    "segundo-aviso": (OVERDUE_1, OVERDUE_2, COMING_1),
    "aviso-final": (OVERDUE_1, OVERDUE_2, COMING_1),
}

TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def make_customer(
    name: str = "Padaria Pão Quente Ltda", tax_id: str = "98765432000198"
) -> Customer:
    return Customer(
        code="000123",
        store="01",
        name=name,
        short_name="PAO QUENTE",
        tax_id=tax_id,
        person_type="F" if len(tax_id) == 11 else "J",
        raw_emails="contato@paoquente.com.br",
        address=Address("Rua das Flores, 45", "Centro", "Campinas", "SP", "13010000"),
        blocked=False,
    )


def make_letter(
    layout: str, titles: tuple[Title, ...], customer: Customer | None = None
) -> PlannedLetter:
    return PlannedLetter(
        layout=layout,
        as_of=AS_OF,
        customer=customer or make_customer(),
        titles=titles,
        recipients=("contato@paoquente.com.br",),
        disposition=Disposition.SEND,
    )


def compose_letter(
    layout: str,
    titles: tuple[Title, ...],
    customer: Customer | None = None,
    *,
    creditor: Creditor = CREDITOR,
    **settings: Any,
) -> ComposedLetter:
    """A letter as the daemon builds it: charges, boleto lines, Pix, then the templates."""
    templates = load_templates(make_environment(TEMPLATES_DIR), layout, SUBJECT)
    letter = make_letter(layout, titles, customer)
    return compose(templates, letter, make_layout(layout, **settings), creditor, MESSAGE_ID)


def render(
    layout: str, titles: tuple[Title, ...], customer: Customer | None = None, **settings: Any
) -> RenderedLetter:
    return compose_letter(layout, titles, customer, **settings).rendered


def html_row(html: str, number: str) -> list[str]:
    """The text of each cell of the HTML table row of título ``number``."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, flags=re.S)
    found = [row for row in rows if number in row and "<td" in row]
    assert len(found) == 1, found
    cells = re.findall(r"<td[^>]*>(.*?)</td>", found[0], flags=re.S)
    return [TAG.sub("", cell).strip() for cell in cells]


def text_row(text: str, number: str) -> list[str]:
    """The columns of the text-part table line of título ``number``."""
    found = [line for line in text.splitlines() if number in line and "Linha" not in line]
    assert len(found) == 1, found
    return found[0].split()


def header_cells(html: str) -> dict[str, str]:
    """Each column header's text → its opening <th> tag, in the letter's first table."""
    headers: dict[str, str] = {}
    for tag, label in re.findall(r"(<th\s[^>]*>)(.*?)</th>", html, flags=re.S):
        headers.setdefault(TAG.sub("", label).strip(), tag)
    return headers


@pytest.mark.parametrize("layout", LAYOUTS)
def test_html_has_letterhead_customer_titles_amounts_and_date(layout: str) -> None:
    titles = SAMPLE_TITLES[layout]
    html = render(layout, titles).html

    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert '<html lang="pt-BR">' in html
    assert '<meta charset="utf-8">' in html
    assert 'name="viewport"' in html
    # Letterhead (CDC art. 42-A): name, formatted CNPJ, address, contacts.
    assert "Distribuidora Exemplo Ltda." in html
    assert "12.345.678/0001-95" in html
    assert "12345678000195" not in html  # every CNPJ goes through |tax_id
    assert "Av. Paulista, 1000, 10º andar" in html
    assert "CEP 01310-100" in html
    assert "(11) 3000-4000" in html
    assert 'href="mailto:financeiro@exemplo.com.br"' in html
    assert "São Paulo, 5 de março de 2025." in html
    # Customer block and greeting.
    assert "Padaria Pão Quente Ltda" in html
    assert "CNPJ 98.765.432/0001-98" in html
    assert "Rua das Flores, 45" in html
    assert "CEP 13010-000" in html
    assert "Prezado(a) cliente Padaria Pão Quente Ltda," in html
    for title in titles:
        assert title.number in html
        assert title.real_due_date.strftime("%d/%m/%Y") in html
        for amount in AMOUNTS[title.number]:
            assert amount in html_row(html, title.number)
        assert VALUES[title.number] in html_row(html, title.number)
    assert "desconsidere este aviso" in html
    assert "Departamento Financeiro" in html


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_part_has_the_same_amounts_and_no_html(layout: str) -> None:
    titles = SAMPLE_TITLES[layout]
    text = render(layout, titles).text

    assert TAG.search(text) is None, TAG.search(text)
    assert "&lt;" not in text and "&amp;" not in text
    assert "12.345.678/0001-95" in text
    assert "12345678000195" not in text
    assert "São Paulo, 5 de março de 2025." in text
    assert "Padaria Pão Quente Ltda" in text
    for title in titles:
        assert title.number in text
        for amount in AMOUNTS[title.number]:
            assert amount in text_row(text, title.number)
    assert "desconsidere este aviso" in text
    assert "financeiro@exemplo.com.br" in text
    assert "(11) 3000-4000" in text
    long_lines = [line for line in text.splitlines() if len(line) > 78]
    assert long_lines == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hostile_customer_name_is_escaped_in_html_and_verbatim_in_text(layout: str) -> None:
    letter = render(layout, SAMPLE_TITLES[layout], make_customer(name=HOSTILE_NAME))

    assert "&lt;b&gt;Bar &amp; Lanches &#34;Zé&#34;&lt;/b&gt;" in letter.html
    assert "<b>Bar" not in letter.html
    assert HOSTILE_NAME in letter.text


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpf_customer_is_labelled_cpf(layout: str) -> None:
    letter = render(layout, SAMPLE_TITLES[layout], make_customer(tax_id="12345678909"))

    assert "CPF 123.456.789-09" in letter.html
    assert "CPF 123.456.789-09" in letter.text


@pytest.mark.parametrize("layout", LAYOUTS)
def test_both_tables_with_totals_and_grand_total(layout: str) -> None:
    letter = render(layout, (OVERDUE_1, OVERDUE_2, COMING_1))

    for part in (letter.html, letter.text):
        lowered = part.lower()
        assert "títulos vencidos" in lowered
        assert "títulos a vencer" in lowered
        assert "total vencido" in lowered
        assert "total a vencer" in lowered
        assert "total em aberto" in lowered
        assert TOTAL_ALL in part  # the grand total, in reais
    # Each table's totals row: the columns' sums, the last one the Total.
    assert html_row(letter.html, "Total vencido")[-1] == "2.134,56"
    assert html_row(letter.html, "Total a vencer")[-1] == "89,90"
    assert text_row(letter.text, "Total vencido")[-1] == "2.134,56"
    assert text_row(letter.text, "Total a vencer")[-1] == "89,90"
    for header in (
        "Título",
        "Vencimento",
        "Dias em atraso",
        "Valor original",
        "Saldo",
        "Multa",
        "Juros",
        "Total",
    ):
        assert f">{header}</th>" in letter.html
    # Prefixo, número and parcela in one column; the issue date under it, smaller.
    assert "NF 000001001/A" in letter.html and "NF 000001001/A" in letter.text
    assert "DP 000001003/1" in letter.html and "DP 000001003/1" in letter.text
    assert "emissão 11/01/2025" in letter.html


def test_reminder_has_no_overdue_table() -> None:
    letter = render("lembrete-vencimento", (COMING_1,))

    for part in (letter.html, letter.text):
        lowered = part.lower()
        assert "títulos a vencer" in lowered
        assert "total a vencer" in lowered
        assert "títulos vencidos" not in lowered
        assert "total vencido" not in lowered
        assert "total em aberto" not in lowered
    assert "Dias em atraso" not in letter.html


@pytest.mark.parametrize("layout", ["primeiro-aviso", "segundo-aviso", "aviso-final"])
def test_notice_without_coming_due_has_no_coming_due_table(layout: str) -> None:
    letter = render(layout, (OVERDUE_1, OVERDUE_2))

    for part in (letter.html, letter.text):
        lowered = part.lower()
        assert "títulos vencidos" in lowered
        assert "títulos a vencer" not in lowered
        assert "total a vencer" not in lowered
        assert "total em aberto" not in lowered
        assert TOTAL_OVERDUE in part


def test_final_notice_makes_no_threats() -> None:
    """CDC arts. 42 and 71: no protesto, credit bureaus or court as a threat."""
    letter = render("aviso-final", (OVERDUE_1, OVERDUE_2))

    for part in (letter.html.lower(), letter.text.lower()):
        for word in ("protest", "serasa", "spc", "negativa", "cartório", "judicia", "justiça"):
            assert word not in part
        assert "medidas previstas no contrato e na legislação" in part


def test_templates_reference_no_external_resources() -> None:
    sources = sorted(TEMPLATES_DIR.rglob("*.j2"))
    names = {path.name for path in sources}
    for layout in LAYOUTS:
        assert f"{layout}.html.j2" in names
        assert f"{layout}.txt.j2" in names
    for path in sources:
        source = path.read_text(encoding="utf-8").lower()
        assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", source) is None, path
        for forbidden in ("<link", "<script", "<iframe", "@import", "url("):
            assert forbidden not in source, (path, forbidden)
        # The one image is the Pix QR code, always from pix.qr_src (cid: or data:, never a URL).
        for image in re.findall(r"<img\b[^>]*>", source):
            assert image.startswith('<img src="{{ pix.qr_src }}"'), (path, image)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rendered_html_is_self_contained(layout: str) -> None:
    html = render(layout, SAMPLE_TITLES[layout]).html
    lowered = html.lower()

    assert "http://" not in lowered and "https://" not in lowered
    for forbidden in ("<link", "<script", "<img", "javascript:"):
        assert forbidden not in lowered
    # CSS is inline: the only <style> block is a progressive-enhancement media query.
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.S)
    assert len(styles) <= 1
    for block in styles:
        assert block.strip().startswith("@media")
    assert "max-width:640px" in html
    assert "overflow-x:auto" in html


def test_missing_variable_raises_template_problem_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "tiny.html.j2").write_text(
        "<p>{{ customer.name }}</p>\n<p>ok</p>\n<p>{{ customer.nickname }}</p>\n",
        encoding="utf-8",
    )
    (tmp_path / "tiny.txt.j2").write_text("{{ customer.name }}\n", encoding="utf-8")
    letter = PlannedLetter(
        layout="tiny",
        as_of=AS_OF,
        customer=make_customer(),
        titles=(OVERDUE_1,),
        recipients=(),
        disposition=Disposition.SEND,
    )
    templates = load_templates(make_environment(tmp_path), "tiny", "Assunto")

    with pytest.raises(TemplateProblem) as caught:
        templates.render(
            letter_context(
                letter, CREDITOR.model_dump(), letter_payment(letter, make_layout("tiny"), CREDITOR)
            )
        )

    problem = caught.value
    assert problem.filename is not None and problem.filename.endswith("tiny.html.j2")
    assert problem.line == 3
    assert "tiny.html.j2:3" in str(problem)
    assert "nickname" in str(problem)


def test_autoescape_cannot_be_switched_off(tmp_path: Path) -> None:
    (tmp_path / "x.html.j2").write_text(
        "<p>ok</p>\n{% autoescape false %}{{ customer.name }}{% endautoescape %}\n"
    )
    (tmp_path / "x.txt.j2").write_text("{{ customer.name }}\n")
    env = make_environment(tmp_path)
    with pytest.raises(TemplateProblem) as problem:
        load_templates(env, "x", "s")
    assert "x.html.j2:2" in str(problem.value)
    assert "autoescape" in str(problem.value)


# --- late charges, boleto lines and Pix ----------------------------------------------------


@pytest.mark.parametrize("layout", ["primeiro-aviso", "segundo-aviso", "aviso-final"])
def test_overdue_row_shows_fine_interest_and_updated_total(layout: str) -> None:
    letter = render(layout, (LATE,), fine_percent="2")

    # Dias, Valor original, Saldo, Multa, Juros, Total (no "R$" in the cells: "valores em R$").
    assert html_row(letter.html, LATE.number)[-6:] == [
        "17",
        "1.000,00",
        "1.000,00",
        "20,00",
        "5,66",
        "1.025,66",
    ]
    assert "valores em R$" in letter.html
    assert text_row(letter.text, LATE.number)[-5:] == [
        "17",
        "1.000,00",
        "20,00",
        "5,66",
        "1.025,66",
    ]
    assert "(valores em R$)" in letter.text
    # The totals row sums each column; the letter's text cites the updated total in reais.
    assert html_row(letter.html, "Total vencido")[-4:] == ["1.000,00", "20,00", "5,66", "1.025,66"]
    assert text_row(letter.text, "Total vencido")[-4:] == ["1.000,00", "20,00", "5,66", "1.025,66"]
    for part in (letter.html, letter.text):
        assert "valor atualizado de R$\xa01.025,66" in part
        assert "saldo de" not in part.lower()


def test_consumer_fine_is_capped_at_two_percent() -> None:
    """CDC art. 52 §1º: whatever the layout says, a consumer's fine is at most 2 %."""
    consumer = make_customer(tax_id="12345678909")
    letter = render("primeiro-aviso", (LATE,), consumer, fine_percent="10")
    assert html_row(letter.html, LATE.number)[-3:] == ["20,00", "5,66", "1.025,66"]


def test_notes_say_the_values_are_updated_only_when_they_are() -> None:
    charged = render("primeiro-aviso", (LATE,), fine_percent="2")
    for part in (charged.html, charged.text):
        flat = " ".join(part.split())
        assert (
            "Valores atualizados até 05/03/2025, com multa e juros por atraso calculados "
            "conforme as condições de cada título." in flat
        )
        assert "os valores podem mudar" in flat
        assert "não incluem" not in flat

    plain = render("primeiro-aviso", (OVERDUE_1,))
    for part in (plain.html, plain.text):
        flat = " ".join(part.split())
        assert "Valores em aberto em 05/03/2025." in flat
        assert "não incluem eventuais multa e juros por atraso" in flat
        assert "atualizado" not in flat  # neither the note nor the letter's text
        assert "no valor de R$ 1.234,56" in flat  # split() took the no-break space


def test_mobile_keeps_title_due_date_days_and_total() -> None:
    letter = render("primeiro-aviso", (LATE, COMING_1), fine_percent="2")
    headers = header_cells(letter.html)
    for optional in ("Valor original", "Multa", "Juros", "Saldo"):
        assert 'class="cb-opcional"' in headers[optional], optional
    for kept in ("Título", "Vencimento", "Dias em atraso", "Total"):
        assert "cb-opcional" not in headers[kept], kept
    assert ".cb-opcional { display: none !important; }" in letter.html
    assert '<span class="cb-opcional"' in letter.html  # the issue date under the título


def test_additions_and_deductions_column_only_when_some_title_has_them() -> None:
    plain = render("primeiro-aviso", (LATE, COMING_1), fine_percent="2")
    assert "Acrésc." not in plain.html
    assert "acréscimos" not in plain.text.lower()

    adjusted = make_title("000002002", date(2025, 2, 16), "500.00", additions="10.00")
    discounted = make_title("000002003", date(2025, 2, 16), "300.00", deductions="2.50")
    letter = render("primeiro-aviso", (adjusted, discounted, COMING_1))

    headers = header_cells(letter.html)
    assert "Acrésc./<wbr>Desc.</th>" in letter.html  # the header may break after the slash
    assert 'class="cb-opcional"' in headers["Acrésc./Desc."]
    # Acrésc./Desc. (additions - deductions) comes right before the Total, which includes it.
    assert html_row(letter.html, adjusted.number)[-2:] == ["10,00", "510,00"]
    assert html_row(letter.html, discounted.number)[-2:] == ["-2,50", "297,50"]
    assert html_row(letter.html, COMING_1.number)[-2:] == ["0,00", "89,90"]  # both tables
    assert html_row(letter.html, "Total vencido")[-2:] == ["7,50", "807,50"]
    # The text part says it under the row, in words.
    assert "    Inclui acréscimos de 10,00." in letter.text
    assert "    Inclui descontos de 2,50." in letter.text
    assert "    O total inclui acréscimos de 10,00 e descontos de 2,50." in letter.text
    assert text_row(letter.text, adjusted.number)[-1] == "510,00"


def test_valid_boleto_line_is_printed_under_its_title() -> None:
    with_boleto = make_title("000003001", date(2025, 2, 16), "1025.66", typeable_line=BOLETO_LINE)
    composed = compose_letter("primeiro-aviso", (with_boleto, OVERDUE_1))
    letter = composed.rendered
    assert composed.payment.problems == ()

    # HTML: a row spanning the table, right after the título's row, in monospace.
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", letter.html, flags=re.S)
    index = next(i for i, row in enumerate(rows) if with_boleto.number in row)
    boleto_row = rows[index + 1]
    assert '<td colspan="8"' in boleto_row  # Título … Total: all 8 columns
    assert "Linha digitável:" in boleto_row
    assert f">{BOLETO_FORMATTED}</span>" in boleto_row
    assert "monospace" in boleto_row
    assert letter.html.count("Linha digitável") == 1  # OVERDUE_1 has no boleto

    lines = letter.text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("NF 000003001"))
    assert lines[index + 1] == f"    Linha digitável: {BOLETO_FORMATTED}"
    assert letter.text.count("Linha digitável") == 1


def test_invalid_boleto_line_is_left_out_and_reported() -> None:
    bad = make_title("000003002", date(2025, 2, 16), "1025.66", typeable_line=BAD_BOLETO_LINE)
    composed = compose_letter("primeiro-aviso", (bad,))
    for part in (composed.rendered.html, composed.rendered.text):
        assert "Linha digitável" not in part
        assert BAD_BOLETO_LINE not in part and "00190.00000" not in part
    assert [key for key, _ in composed.payment.problems] == [bad.key]


def test_boleto_lines_can_be_switched_off_by_the_layout() -> None:
    good = make_title("000003001", date(2025, 2, 16), "1025.66", typeable_line=BOLETO_LINE)
    letter = render("primeiro-aviso", (good,), boleto=False)
    assert "Linha digitável" not in letter.html and "Linha digitável" not in letter.text


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pix_block_has_qr_image_amount_receiver_and_whole_code(layout: str) -> None:
    composed = compose_letter(
        layout, SAMPLE_TITLES[layout], creditor=PIX_CREDITOR, pix=True, fine_percent="2"
    )
    pix = composed.payment.pix
    assert pix is not None
    html, text = composed.rendered.html, composed.rendered.text
    (image,) = composed.images
    amount = composed.payment.all.total

    # HTML: the QR code is the image attached to the message, by its Content-ID.
    images = re.findall(r"<img\b[^>]*>", html)
    assert images == [
        f'<img src="cid:{image.content_id}" width="160" height="160" alt="QR Code Pix" '
        'style="display:block;width:160px;height:160px;border:0;outline:none;'
        'text-decoration:none;">'
    ]
    assert "Pague com Pix" in html
    assert f'Valor: <strong style="font-size:16px;">{money(amount)}</strong>' in html
    assert amount == composed.payment.all.total == pix.amount
    assert "Recebedor: Distribuidora Exemplo Ltda. – CNPJ 12.345.678/0001-95" in html
    # The code whole, in a box that breaks it only on screen (no hyphen or space inserted).
    box = re.search(r"<div style=\"([^\"]*)\">" + re.escape(pix.payload) + "</div>", html)
    assert box is not None
    assert "word-break:break-all" in box.group(1) and "monospace" in box.group(1)
    # The block comes after the tables.
    assert html.index("Pague com Pix") > html.index("Total a vencer")

    # Text part: the code on a line of its own, unwrapped, the only line over 78 characters.
    lines = text.splitlines()
    assert pix.payload in lines
    assert len(pix.payload) > 78
    assert [line for line in lines if len(line) > 78] == [pix.payload]
    assert "PAGUE COM PIX" in text
    assert "Recebedor: Distribuidora Exemplo Ltda. - CNPJ 12.345.678/0001-95" in text
    assert "Distribuidora Exemplo Ltda.." not in " ".join(text.split())
    assert "não pague também os boletos" in " ".join(text.split())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_pix_block_without_pix(layout: str) -> None:
    # The creditor has Pix data but the layout does not offer it, and the other way round.
    for creditor, pix in ((PIX_CREDITOR, False), (CREDITOR, True)):
        composed = compose_letter(layout, SAMPLE_TITLES[layout], creditor=creditor, pix=pix)
        assert composed.payment.pix is None and composed.images == ()
        for part in (composed.rendered.html, composed.rendered.text):
            assert "pix" not in part.lower()
        assert "<img" not in composed.rendered.html


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_lines_fit_78_columns_with_everything_on(layout: str) -> None:
    """Charges, adjustments, boleto lines and Pix, with large amounts: only the Pix code is long."""
    titles = (
        make_title(
            "000004001",
            date(2025, 1, 2),
            "987654.32",
            installment="AB",
            interest_rate="0.0333",
            additions="1234.56",
            deductions="99.99",
            typeable_line=BOLETO_LINE,
        ),
        make_title("000004002", date(2025, 2, 16), "1000.00", prefix="DUP", interest_rate="0.1"),
        make_title(
            "000004003",
            date(2025, 3, 20),
            "123456.78",
            additions="10.00",
            typeable_line=BOLETO_LINE,
        ),
    )
    composed = compose_letter(layout, titles, creditor=PIX_CREDITOR, pix=True, fine_percent="2")
    assert composed.payment.pix is not None
    long_lines = [line for line in composed.rendered.text.splitlines() if len(line) > 78]
    assert long_lines == [composed.payment.pix.payload]
    assert "Linha digitável" in composed.rendered.text
