"""The shipped letter templates (templates/): content, escaping, structure and e-mail safety."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cobranca.models import Address, Customer, Disposition, PlannedLetter, RenderedLetter, Title
from cobranca.render import TemplateProblem, letter_context, load_templates, make_environment

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
LAYOUTS = ("lembrete-vencimento", "primeiro-aviso", "segundo-aviso", "aviso-final")
AS_OF = date(2025, 3, 5)
HOSTILE_NAME = '<b>Bar & Lanches "Zé"</b>'

CREDITOR = {
    "name": "Distribuidora Exemplo Ltda.",
    "tax_id": "12345678000190",
    "address": "Av. Paulista, 1000, 10º andar",
    "city": "São Paulo",
    "state": "SP",
    "zip_code": "01310100",
    "phone": "(11) 3000-4000",
    "email": "financeiro@exemplo.com.br",
    "website": "www.exemplo.com.br",
}


def make_title(
    number: str,
    real_due: date,
    value: str,
    *,
    prefix: str = "NF",
    installment: str = "",
    abatements: str = "0.00",
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
    )


# Two overdue títulos (one with an abatement: saldo 900,00) and one coming due.
OVERDUE_1 = make_title("000001001", date(2025, 2, 10), "1234.56", installment="A")
OVERDUE_2 = make_title("000001002", date(2025, 2, 20), "1000.00", abatements="100.00")
COMING_1 = make_title("000001003", date(2025, 3, 8), "89.90", prefix="DP", installment="1")

TOTAL_OVERDUE = "R$\xa02.134,56"
TOTAL_COMING = "R$\xa089,90"
TOTAL_ALL = "R$\xa02.224,46"
AMOUNTS = {
    OVERDUE_1.number: ["R$\xa01.234,56"],
    OVERDUE_2.number: ["R$\xa01.000,00", "R$\xa0900,00"],
    COMING_1.number: [TOTAL_COMING],
}
# The títulos each layout normally gets: a reminder only has títulos not yet due.
SAMPLE_TITLES = {
    "lembrete-vencimento": (COMING_1,),
    "primeiro-aviso": (OVERDUE_1, OVERDUE_2, COMING_1),
    "segundo-aviso": (OVERDUE_1, OVERDUE_2, COMING_1),
    "aviso-final": (OVERDUE_1, OVERDUE_2, COMING_1),
}

TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def make_customer(
    name: str = "Padaria Pão Quente Ltda", tax_id: str = "98765432000110"
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


def render(
    layout: str, titles: tuple[Title, ...], customer: Customer | None = None
) -> RenderedLetter:
    letter = PlannedLetter(
        layout=layout,
        as_of=AS_OF,
        customer=customer or make_customer(),
        titles=titles,
        recipients=("contato@paoquente.com.br",),
        disposition=Disposition.SEND,
    )
    env = make_environment(TEMPLATES_DIR)
    templates = load_templates(env, layout, "Aviso – {{ creditor.name }}")
    return templates.render(letter_context(letter, CREDITOR))


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
    assert "12.345.678/0001-90" in html
    assert "12345678000190" not in html  # every CNPJ goes through |tax_id
    assert "Av. Paulista, 1000, 10º andar" in html
    assert "CEP 01310-100" in html
    assert "(11) 3000-4000" in html
    assert 'href="mailto:financeiro@exemplo.com.br"' in html
    assert "São Paulo, 5 de março de 2025." in html
    # Customer block and greeting.
    assert "Padaria Pão Quente Ltda" in html
    assert "CNPJ 98.765.432/0001-10" in html
    assert "Rua das Flores, 45" in html
    assert "CEP 13010-000" in html
    assert "Prezado(a) cliente Padaria Pão Quente Ltda," in html
    for title in titles:
        assert title.number in html
        assert title.real_due_date.strftime("%d/%m/%Y") in html
        for amount in AMOUNTS[title.number]:
            assert amount in html
    assert "desconsidere este aviso" in html
    assert "Departamento Financeiro" in html


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_part_has_the_same_amounts_and_no_html(layout: str) -> None:
    titles = SAMPLE_TITLES[layout]
    text = render(layout, titles).text

    assert TAG.search(text) is None, TAG.search(text)
    assert "&lt;" not in text and "&amp;" not in text
    assert "12.345.678/0001-90" in text
    assert "12345678000190" not in text
    assert "São Paulo, 5 de março de 2025." in text
    assert "Padaria Pão Quente Ltda" in text
    for title in titles:
        assert title.number in text
        for amount in AMOUNTS[title.number]:
            assert amount in text
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
        assert TOTAL_OVERDUE in part
        assert TOTAL_ALL in part
    for header in (
        "Prefixo",
        "Número",
        "Parcela",
        "Emissão",
        "Vencimento",
        "Dias em atraso",
        "Valor original",
        "Saldo",
    ):
        assert f">{header}</th>" in letter.html


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
        for forbidden in ("<link", "<script", "<img", "<iframe", "@import", "url("):
            assert forbidden not in source, (path, forbidden)


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
        templates.render(letter_context(letter, CREDITOR))

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
