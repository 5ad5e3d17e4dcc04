"""Render a planned letter into subject, HTML and plain text with sandboxed Jinja2 templates.

Templates are edited by finance, and the data comes from the ERP, so both are untrusted:
templates run in an immutable sandbox, HTML output is autoescaped, ``|safe`` is removed
(ERP text can never be marked safe), and an undefined variable is an error, not an empty string.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from babel.dates import format_date as babel_format_date
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .charges import ChargeTotals
from .config import Creditor, Layout
from .models import InlineImage, PlannedLetter, RenderedLetter
from .payment import LetterPayment, TitlePayment, letter_payment
from .protheus import CENTS
from .taxid import valid_cnpj, valid_cpf

LOCALE = "pt_BR"
HTML_SUFFIX = ".html.j2"
TEXT_SUFFIX = ".txt.j2"


class TemplateProblem(Exception):
    """A template that cannot be loaded or rendered, with the file and line to fix."""

    def __init__(self, message: str, filename: str | None = None, line: int | None = None):
        self.message = message
        self.filename = filename
        self.line = line
        where = filename or "template"
        if line:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


_PT_BR_SEPARATORS = str.maketrans(",.", ".,")


def money(value: Decimal | int | None) -> str:
    """Decimal → 'R$ 1.234,56' (no-break space), rounded half-up first: Babel rounds half-even.

    The text is Babel's pt_BR currency format (tests compare the two on random amounts), made
    here because Babel parses its pattern on every call: that was a third of a letter's render
    time, with a letter printing some fifty amounts (bench/). A negative zero prints as zero.
    """
    if value is None:
        return ""
    if not isinstance(value, Decimal | int):
        raise TypeError(f"money expects a Decimal, got {type(value).__name__}")
    amount = Decimal(value).quantize(CENTS, ROUND_HALF_UP)
    digits = f"{abs(amount):,.2f}".translate(_PT_BR_SEPARATORS)
    return f"{'-' if amount < 0 else ''}R$\xa0{digits}"


def amount(value: Decimal | int | None) -> str:
    """Decimal → '1.234,56': money without 'R$', for table columns headed '(R$)'."""
    return money(value).replace("R$", "").replace("\xa0", "").strip()


def short_date(value: date | None) -> str:
    """date → dd/mm/aaaa; a blank date prints as nothing."""
    return value.strftime("%d/%m/%Y") if value else ""


def long_date(value: date | None) -> str:
    """date → '5 de março de 2025', as the letter's date line reads."""
    return babel_format_date(value, "long", locale=LOCALE) if value else ""


def tax_id(value: str | None) -> str:
    """CNPJ (14 characters, alphanumeric since July 2026) or CPF (11 digits), formatted.

    Only a number whose check digits are right is formatted; anything else prints as stored,
    so a letter never dresses a mistyped number up as a valid one.
    """
    text = (value or "").strip().upper()
    if valid_cnpj(text):
        return f"{text[:2]}.{text[2:5]}.{text[5:8]}/{text[8:12]}-{text[12:]}"
    if valid_cpf(text):
        return f"{text[:3]}.{text[3:6]}.{text[6:9]}-{text[9:]}"
    return text


def tax_id_problem(value: str) -> str | None:
    """Why a customer's CNPJ/CPF (A1_CGC) is not a valid one, or None."""
    text = value.strip().upper()
    if not text or valid_cnpj(text) or valid_cpf(text):
        return None
    if len(text) in (11, 14):
        kind = "CPF" if len(text) == 11 else "CNPJ"
        return f"A1_CGC: {kind} {text} has wrong check digits (printed as stored)"
    return f"A1_CGC: {text!r} is neither a CPF (11 digits) nor a CNPJ (14 characters)"


def zip_code(value: str | None) -> str:
    """CEP 01310100 → 01310-100."""
    text = (value or "").strip()
    return f"{text[:5]}-{text[5:]}" if len(text) == 8 and text.isdigit() else text


FILTERS = {
    "money": money,
    "amount": amount,
    "date": short_date,
    "long_date": long_date,
    "tax_id": tax_id,
    "zip": zip_code,
}


class LetterEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus: no template may switch autoescaping off for ERP data."""

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for node in tree.find_all(nodes.EvalContextModifier):
            if any(option.key == "autoescape" for option in node.options):
                raise jinja2.TemplateSyntaxError(
                    "{% autoescape %} blocks are not allowed: customer data is always escaped",
                    node.lineno,
                    name,
                    filename,
                )
        return tree


def make_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    """The one Jinja2 environment every letter is rendered with."""
    env = LetterEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=False
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.pop("safe", None)
    env.filters.update(FILTERS)
    return env


def template_names(template: str) -> tuple[str, str]:
    """A layout's template name → its HTML and plain-text files."""
    return f"{template}{HTML_SUFFIX}", f"{template}{TEXT_SUFFIX}"


def _title_context(item: TitlePayment) -> dict[str, Any]:
    title, charges = item.title, item.charges
    return {
        "key": title.key,
        "branch": title.branch,
        "prefix": title.prefix,
        "number": title.number,
        "installment": title.installment,
        "type": title.type,
        "issue_date": title.issue_date,
        "due_date": title.due_date,
        "real_due_date": title.real_due_date,
        "days_late": charges.days_late,
        "days_from_due": title.days_from_due,
        "value": title.value,
        "balance": charges.net_balance,
        "fine": charges.fine,
        "interest": charges.interest,
        "additions": charges.additions,
        "deductions": charges.deductions,
        "total": charges.total,
        "boleto": item.boleto.formatted_line if item.boleto else "",
    }


def _sums(sums: ChargeTotals) -> dict[str, Decimal]:
    return {
        "balance": sums.net_balance,
        "fine": sums.fine,
        "interest": sums.interest,
        "additions": sums.additions,
        "deductions": sums.deductions,
        "total": sums.total,
    }


def letter_context(
    letter: PlannedLetter,
    creditor: Mapping[str, Any],
    payment: LetterPayment,
    qr_src: str = "",
) -> dict[str, Any]:
    """The variables a template sees. Documented in docs/templates.md; keep both in step.

    ``qr_src`` is where the HTML finds the Pix QR image: ``cid:…`` in an e-mail (mail clients
    do not show ``data:`` images), a ``data:`` URI in a PDF.
    """
    customer = letter.customer
    overdue = [_title_context(p) for p in payment.titles if p.title.overdue]
    coming_due = [_title_context(p) for p in payment.titles if not p.title.overdue]
    pix = payment.pix
    return {
        "creditor": dict(creditor),
        "customer": {
            "code": customer.code,
            "store": customer.store,
            "name": customer.name,
            "short_name": customer.short_name,
            "tax_id": customer.tax_id,
            "person_type": customer.person_type,
            "address": {
                "street": customer.address.street,
                "district": customer.address.district,
                "city": customer.address.city,
                "state": customer.address.state,
                "zip_code": customer.address.zip_code,
            },
        },
        "letter": {"as_of": letter.as_of, "layout": letter.layout},
        "overdue": overdue,
        "coming_due": coming_due,
        "totals": {
            "overdue": payment.overdue.total,
            "coming_due": payment.coming_due.total,
            "all": payment.all.total,
        },
        "sums": {
            "overdue": _sums(payment.overdue),
            "coming_due": _sums(payment.coming_due),
            "all": _sums(payment.all),
        },
        "pix": (
            {"code": pix.payload, "amount": pix.amount, "txid": pix.txid, "qr_src": qr_src}
            if pix
            else None
        ),
    }


_LINE_BREAKS = re.compile(r"[\r\n\t\x00-\x1f\x7f]+")


def clean_subject(text: str) -> str:
    """A subject is one header line: control characters (CR/LF above all) become spaces."""
    return " ".join(_LINE_BREAKS.sub(" ", text).split())


def qr_content_id(message_id: str) -> str:
    """Unique per letter (from its Message-ID) and short: a Content-ID longer than a header
    line gets RFC 2047-encoded by the email package, and mail clients then miss the image."""
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:20]
    domain = message_id.strip("<>").rpartition("@")[2] or "cobranca.invalid"
    return f"pix.{digest}@{domain}"


@dataclass(frozen=True)
class ComposedLetter:
    """A letter ready for a transport: its texts, what it asks for, and its inline images."""

    rendered: RenderedLetter
    payment: LetterPayment
    images: tuple[InlineImage, ...] = ()

    @property
    def problems(self) -> tuple[tuple[str, str], ...]:
        """ERP data the letter left out or could not vouch for: (título or customer, why)."""
        return self.payment.problems + self.customer_problems

    customer_problems: tuple[tuple[str, str], ...] = ()


def compose(
    templates: LetterTemplates,
    letter: PlannedLetter,
    layout: Layout,
    creditor: Creditor,
    message_id: str,
) -> ComposedLetter:
    """Charges, ways to pay and texts of one e-mail letter; raises TemplateProblem.

    The Pix QR image's Content-ID derives from the Message-ID (see qr_content_id).
    """
    payment = letter_payment(letter, layout, creditor)
    images: tuple[InlineImage, ...] = ()
    if payment.pix:
        images = (InlineImage(qr_content_id(message_id), payment.pix.qr_png, "pix.png"),)
    context = letter_context(
        letter, creditor.model_dump(), payment, images[0].src if images else ""
    )
    problem = tax_id_problem(letter.customer.tax_id)
    customer_problems = ((letter.customer.key, problem),) if problem else ()
    return ComposedLetter(templates.render(context), payment, images, customer_problems)


@dataclass(frozen=True)
class LetterTemplates:
    """The compiled templates of one layout: subject, HTML body and plain-text body."""

    subject: jinja2.Template
    html: jinja2.Template
    text: jinja2.Template

    def render(self, context: Mapping[str, Any]) -> RenderedLetter:
        subject = clean_subject(render_template(self.subject, context))
        return RenderedLetter(
            subject=subject,
            html=render_template(self.html, {**context, "subject": subject}),
            text=render_template(self.text, {**context, "subject": subject}),
        )


def load_templates(
    env: ImmutableSandboxedEnvironment, template: str, subject: str
) -> LetterTemplates:
    """Compile a layout's templates; raise TemplateProblem naming the file and line."""
    html_name, text_name = template_names(template)
    return LetterTemplates(
        subject=compile_string(env, subject, "subject"),
        html=load_template(env, html_name),
        text=load_template(env, text_name),
    )


def compile_string(env: ImmutableSandboxedEnvironment, source: str, label: str) -> jinja2.Template:
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"syntax error: {exc.message}", label) from exc


def load_template(env: ImmutableSandboxedEnvironment, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound as exc:
        searched = ", ".join(getattr(env.loader, "searchpath", []))
        raise TemplateProblem(
            f"template file not found: {exc.name} (looked in {searched})", exc.name
        ) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(
            f"syntax error: {exc.message}", exc.filename or exc.name, exc.lineno
        ) from exc


def render_template(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        filename, line = _template_position(exc.__traceback__, template)
        hint = "check the spelling; docs/templates.md lists the variables a letter has"
        raise TemplateProblem(f"undefined variable: {exc} ({hint})", filename, line) from exc
    except jinja2.TemplateError as exc:
        filename, line = _template_position(exc.__traceback__, template)
        raise TemplateProblem(f"{type(exc).__name__}: {exc}", filename, line) from exc
    except RecursionError as exc:
        filename, line = _template_position(exc.__traceback__, template)
        raise TemplateProblem(
            "a macro or include calls itself without end", filename, line
        ) from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        filename, line = _template_position(exc.__traceback__, template)
        raise TemplateProblem(f"{type(exc).__name__}: {exc}", filename, line) from exc


def _template_position(
    tb: TracebackType | None, template: jinja2.Template
) -> tuple[str | None, int | None]:
    """Jinja rewrites tracebacks so template frames carry the template file and line."""
    found: tuple[str | None, int | None] = (template.filename or template.name or "subject", None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2") or filename == "<template>":
            found = (None if filename == "<template>" else filename, tb.tb_lineno)
        tb = tb.tb_next
    if found[0] is None:
        found = ("subject", found[1])
    return found
