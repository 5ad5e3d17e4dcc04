"""`cobranca check`: the config and every template it names, validated before 08:00 does it.

Templates are parsed and also rendered once with a sample letter, so an undefined variable or a
filter misuse is found now, with its file and line, not in the middle of a run.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from .config import Config
from .models import Address, Customer, Disposition, PlannedLetter, Title
from .render import TemplateProblem, compose, load_templates, make_environment

# Banco do Brasil's published example line: valid check digits, so the boleto row renders.
SAMPLE_BOLETO = "00190500954014481606906809350314337370000000100"


def sample_letter(layout: str, as_of: date) -> PlannedLetter:
    """A letter with one overdue and one coming-due título, exercising every variable."""
    customer = Customer(
        code="000001", store="01", name="Cliente Exemplo Ltda", short_name="Exemplo",
        tax_id="11222333000181", person_type="J", raw_emails="financeiro@exemplo.com.br",
        address=Address("Rua Exemplo, 100", "Centro", "São Paulo", "SP", "01001000"),
        blocked=False,
    )  # fmt: skip

    def title(number: str, days_from_due: int) -> Title:
        due = date.fromordinal(as_of.toordinal() - days_from_due)
        return Title(
            branch="01", prefix="NF", number=number, installment="", type="NF",
            customer_code="000001", customer_store="01", issue_date=due, due_date=due,
            real_due_date=due, value=Decimal("1234.56"), balance=Decimal("1234.56"),
            abatements=Decimal("0.00"), situation="0", days_from_due=days_from_due,
            days_late=max(days_from_due, 0), interest_rate=Decimal("0.0333"),
            additions=Decimal("10.00"), deductions=Decimal("5.00"), typeable_line=SAMPLE_BOLETO,
        )  # fmt: skip

    return PlannedLetter(
        layout=layout, as_of=as_of, customer=customer,
        titles=(title("000000001", 10), title("000000002", -3)),
        recipients=("financeiro@exemplo.com.br",), disposition=Disposition.SEND,
    )  # fmt: skip


def check_templates(config: Config, today: date) -> list[str]:
    """Every template problem of every layout, as 'file:line: message' lines."""
    from .pdf import PdfRenderer

    env = make_environment(config.templates_dir)
    printer = PdfRenderer(config, env)
    problems: list[str] = []
    for index, layout in enumerate(config.layouts):
        try:
            sample = sample_letter(layout.name, today)
            templates = load_templates(env, layout.template, layout.subject)
            compose(templates, sample, layout, config.creditor, "<check@cobranca>")
            printer.html(sample)  # the printed letter too (HTML only: fast)
        except TemplateProblem as exc:
            if exc.filename == "subject":
                where = config.where(("layouts", index, "subject"))
                problems.append(f"{where}: layouts[{index}].subject: {exc.message}")
            else:
                where = config.where(("layouts", index, "template"))
                problems.append(f"{exc} (layout {layout.name}, template set at {where})")
    return problems
