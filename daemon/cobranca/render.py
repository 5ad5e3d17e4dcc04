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
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from types import BuiltinMethodType, TracebackType
from typing import Any

import jinja2
from babel.dates import format_date as babel_format_date
from jinja2 import nodes
from jinja2.runtime import Context, Macro
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

    def __reduce__(self) -> tuple[type[TemplateProblem], tuple[str, str | None, int | None]]:
        # As it was made, through a process boundary (printing renders in worker processes).
        return (TemplateProblem, (self.message, self.filename, self.line))


def money(value: Decimal | int | None) -> str:
    """Decimal → 'R$ 1.234,56' (no-break space), rounded half-up first: Babel rounds half-even.

    The text is Babel's pt_BR currency format (tests compare the two on random amounts), made
    here because Babel parses its pattern on every call: that was a third of a letter's render
    time, with a letter printing some fifty amounts (bench/). A negative zero prints as zero.
    Each amount's text is remembered: a letter prints each amount twice (HTML and text), and
    zeros and round sums in every letter.
    """
    if value is None:
        return ""
    if value.__class__ is not Decimal and not isinstance(value, Decimal | int):
        raise TypeError(f"money expects a Decimal, got {type(value).__name__}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise InvalidOperation(f"money cannot print {value}")
    return _money_text(value)


@lru_cache(maxsize=2048)  # a letter repeats its amounts; zeros repeat in every letter
def _money_text(value: Decimal | int) -> str:
    # Equal amounts (1, 1.0, 1.00) print alike, so they may share an entry.
    amount = Decimal(value).quantize(CENTS, ROUND_HALF_UP)
    # In whole cents, as an int: formatting an int is cheaper than a Decimal.
    cents = int(amount.scaleb(2))
    reais, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}R$\xa0{reais:,}".replace(",", ".") + f",{rest:02d}"


def amount(value: Decimal | int | None) -> str:
    """Decimal → '1.234,56': money without 'R$', for table columns headed '(R$)'."""
    return _without_symbol(money(value))


@lru_cache(maxsize=2048)  # a letter repeats its amounts; zeros repeat in every letter
def _without_symbol(text: str) -> str:
    return text.replace("R$", "").replace("\xa0", "").strip()


def short_date(value: date | None) -> str:
    """date → dd/mm/aaaa; a blank date prints as nothing."""
    return _short_date(value) if value else ""


@lru_cache(maxsize=4096)
def _short_date(value: date) -> str:
    # strftime is slow, and a run's letters print few distinct dates (its day, due dates).
    return value.strftime("%d/%m/%Y")


def long_date(value: date | None) -> str:
    """date → '5 de março de 2025', as the letter's date line reads."""
    return _long_date(value) if value else ""


@lru_cache(maxsize=64)
def _long_date(value: date) -> str:
    # Babel takes ~50 µs a call, and a run's letters all print the same date or few.
    return babel_format_date(value, "long", locale=LOCALE)


def tax_id(value: str | None) -> str:
    """CNPJ (14 characters, alphanumeric since July 2026) or CPF (11 digits), formatted.

    Only a number whose check digits are right is formatted; anything else prints as stored,
    so a letter never dresses a mistyped number up as a valid one.
    """
    return _tax_id((value or "").strip().upper())


@lru_cache(maxsize=512)
def _tax_id(text: str) -> str:
    # A letter prints the creditor's CNPJ five times or so and the customer's twice.
    if valid_cnpj(text):
        return f"{text[:2]}.{text[2:5]}.{text[5:8]}/{text[8:12]}-{text[12:]}"
    if valid_cpf(text):
        return f"{text[:3]}.{text[3:6]}.{text[6:9]}-{text[9:]}"
    return text


def tax_id_problem(value: str) -> str | None:
    """Why a customer's CNPJ/CPF (A1_CGC) is not a valid one, or None."""
    text = value.strip().upper()
    if not text or _tax_id(text) != text:  # formatted: a valid CNPJ or CPF
        return None
    if len(text) in (11, 14):
        kind = "CPF" if len(text) == 11 else "CNPJ"
        return f"A1_CGC: {kind} {text} has wrong check digits (printed as stored)"
    return f"A1_CGC: {text!r} is neither a CPF (11 digits) nor a CNPJ (14 characters)"


def zip_code(value: str | None) -> str:
    """CEP 01310100 → 01310-100."""
    text = (value or "").strip()
    return f"{text[:5]}-{text[5:]}" if len(text) == 8 and text.isdigit() else text


@jinja2.pass_environment
def wordwrap(
    environment: jinja2.Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's wordwrap, remembered: most paragraphs a letter wraps are the same in every
    letter of a run (the creditor's name and address, the closing texts), and textwrap is
    slow. Only plain strings are remembered; anything else goes to Jinja as it is."""
    if wrapstring is None:
        wrapstring = environment.newline_sequence
    if type(s) is str and type(wrapstring) is str:
        if 0 < len(s) <= width and not s[-1].isspace() and len(s.splitlines()) == 1:
            return s  # one line that fits, nothing at its end for textwrap to drop
        return _wordwrap(s, width, break_long_words, wrapstring, break_on_hyphens)
    return _JINJA_WORDWRAP(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


_JINJA_WORDWRAP = jinja2.filters.do_wordwrap


@lru_cache(maxsize=512)
def _wordwrap(
    s: str, width: int, break_long_words: bool, wrapstring: str, break_on_hyphens: bool
) -> str:
    lines = _greedy_lines(s, width, break_on_hyphens)
    if lines is not None:
        return wrapstring.join(lines)
    return _JINJA_WORDWRAP(None, s, width, break_long_words, wrapstring, break_on_hyphens)


# Not one line of words and single spaces: whitespace textwrap breaks at or str.splitlines
# splits at, other than a space; two spaces; a space at either end; a "word" of other
# whitespace only (an em space alone), which textwrap drops at a line's ends.
_NOT_PLAIN = re.compile(r"[\t\n\x0b\x0c\r\x1c-\x1e\x85\u2028\u2029]|  |^ | $|(?:^| )[^\S ]+(?= |$)")


def _greedy_lines(s: str, width: int, break_on_hyphens: bool) -> list[str] | None:
    """textwrap's lines for one line of words separated by single spaces, or None.

    Such a line breaks at the last space that leaves at most ``width`` characters, as
    textwrap fills it, without its word-by-word loop: the paragraphs a letter wraps that
    differ in every letter (the customer's name, the amount) took 6 % of composing it
    (bench/). None (textwrap decides) for anything else: other whitespace between words or as a
    word, two spaces in a row, spaces at either end, a hyphen textwrap may break at, a word
    longer than ``width``.
    """
    if width < 1 or (break_on_hyphens and "-" in s) or _NOT_PLAIN.search(s):
        return None
    lines = []
    while len(s) > width:
        cut = s.rfind(" ", 0, width + 1)
        if cut < 1:
            return None
        lines.append(s[:cut])
        s = s[cut + 1 :]
    if s:
        lines.append(s)
    return lines


FILTERS = {
    "money": money,
    "amount": amount,
    "date": short_date,
    "long_date": long_date,
    "tax_id": tax_id,
    "zip": zip_code,
    "wordwrap": wordwrap,
}


# What getattr() finds on a plain dict: any other name can only be one of its keys.
_DICT_ATTRIBUTES = frozenset(dir(dict))
_SAFE_ATTRIBUTES_LIMIT = 1024
_UNMARKABLE_CALLABLES = frozenset({Macro, BuiltinMethodType})


class LetterEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus: no template may switch autoescaping off for ERP data.

    Three shortcuts that decide exactly as the sandbox does, only faster (bench/: the sandbox's
    checks were a fifth of a letter's render time): ``customer.name`` on a plain dict (every
    letter variable is one) looks the key up without first failing an attribute look-up;
    whether an attribute is safe is remembered per (type, name), the two things the sandbox
    decides it from (names starting with "_", a function's or generator's internals, methods
    that modify lists, dicts and sets); and calling a template's own macro or a built-in
    method skips looking for unsafe marks such objects cannot have. tests/test_render_speedups.py
    checks that what the sandbox refuses is still refused.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe_attributes: dict[tuple[type, str], bool] = {}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # A template's own macros and built-in methods ("texto.strip()") cannot carry the
        # unsafe_callable / alters_data marks the sandbox looks for: no need to look. They are
        # called as Context.call calls them, without its search for pass_context marks: a
        # macro takes the caller's eval context (its autoescaping), a built-in method nothing.
        kind = type(__obj)
        if kind in _UNMARKABLE_CALLABLES:
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            try:
                if kind is Macro and __obj._default_autoescape:
                    return __obj(__context.eval_ctx, *args, **kwargs)
                # A macro from a template that does not escape (textos/*.j2), called in an
                # HTML letter, returns plain text for the caller to escape: Jinja would mark
                # its unescaped output safe (tests/test_render_speedups.py).
                return __obj(*args, **kwargs)
            except StopIteration:  # as Context.call has it
                return __self.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        return super().call(__context, __obj, *args, **kwargs)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = self._safe_attributes.get(key)
        if safe is None:
            safe = super().is_safe_attribute(obj, attr, value)
            if len(self._safe_attributes) < _SAFE_ATTRIBUTES_LIMIT:
                self._safe_attributes[key] = safe
        return safe

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
        if self._escapes(name):
            # What an included or parent template prints goes out as it escapes it: one that
            # does not (textos/*.j2, a .txt.j2) would put customer data into the HTML raw.
            for node in tree.find_all((nodes.Include, nodes.Extends)):
                target = node.template
                if not (isinstance(target, nodes.Const) and self._escapes(target.value)):
                    tag = "include" if isinstance(node, nodes.Include) else "extends"
                    shown = target.value if isinstance(target, nodes.Const) else "that"
                    raise jinja2.TemplateSyntaxError(
                        f"{{% {tag} %}} of {shown!r}: an HTML letter may only {tag} "
                        f"templates named *{HTML_SUFFIX}, which escape customer data "
                        "(take texts from other files with {% import %})",
                        node.lineno,
                        name,
                        filename,
                    )
        return tree

    def _escapes(self, name: object) -> bool:
        """Whether the template of this name is autoescaped (HTML)."""
        autoescape = self.autoescape
        if callable(autoescape):
            return isinstance(name, str) and bool(autoescape(name))
        return bool(autoescape)


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
        # Every {% extends %}, {% import %} and {% from %} of every letter looked at the file's
        # modification time (os.stat) to see whether to compile it again: 5 % of a letter's
        # render. An environment lives for one run (runner, check, preview), and a run should
        # print every letter from the same templates (its history records their digest).
        auto_reload=False,
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
    sums_overdue, sums_coming_due, sums_all = payment.overdue, payment.coming_due, payment.all
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
            "overdue": sums_overdue.total,
            "coming_due": sums_coming_due.total,
            "all": sums_all.total,
        },
        "sums": {
            "overdue": _sums(sums_overdue),
            "coming_due": _sums(sums_coming_due),
            "all": _sums(sums_all),
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


def _creditor_data(creditor: Creditor) -> dict[str, Any]:
    """The creditor as templates see it: the same for every letter of a run (the config is
    frozen), and letter_context copies it."""
    try:
        return _creditor_dump(creditor)
    except TypeError:  # not hashable
        return creditor.model_dump()


@lru_cache(maxsize=8)
def _creditor_dump(creditor: Creditor) -> dict[str, Any]:
    return creditor.model_dump()


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
        letter, _creditor_data(creditor), payment, images[0].src if images else ""
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
