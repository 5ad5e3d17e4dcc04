"""`cobranca report`: what the letters of a period did, per layout, for finance and auditors.

For each layout, over the letters whose reference (as-of) date falls in the period: how many
were sent, failed, left ambiguous, went to paper or were skipped; how many customer responses
followed (when the history has a ``cobranca_responses`` table); and how many of the títulos in
the letters *sent* were paid within 7, 15 and 30 days of the letter.

The payment rule (also printed in the report's footer): a título counts as paid within N days
when its SE1 row (read by R_E_C_N_O_, live, and still the same título by its key) has a balance
of zero (E1_SALDO ≤ 0.005) and its last write-off date E1_BAIXA is on or after the day the letter
was sent (``sent_at`` in the configured time zone) and at most N days after it. Each título is
counted once per letter; a título in two letters counts for each of them.

The history is only read (nothing is created there) and streamed: letters and their títulos
come in batches, and SE1 is read in chunks of at most ``RECNO_CHUNK`` recnos per query.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup, escape
from sqlalchemy import MetaData, Table, and_, create_engine, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from . import protheus
from .arguments import iso_date
from .config import Config
from .history import LetterRecord, LetterTitleRecord, open_existing
from .models import LetterStatus
from .render import money

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2

WINDOWS = (7, 15, 30)
RECNO_CHUNK = 500
YIELD_PER = 1000
PAID_TOLERANCE = 0.005
DEFAULT_DAYS = 30
RESPONSES_TABLE = "cobranca_responses"
TEMPLATE = "relatorio.html.j2"
_REPO_TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"

PAYMENT_RULE_EN = (
    "A título counts as paid within N days when its SE1 row (read by R_E_C_N_O_, not deleted, "
    "same key filial|prefixo|num|parcela|tipo|cliente|loja) has no balance left (E1_SALDO up to "
    "R$ 0.005) and its last write-off date (E1_BAIXA) is on or after the day the letter was "
    "sent and at most N days later. Each título counts once per letter; only títulos of sent "
    "letters count. For letters sent less than N days ago the window is still open."
)
PAYMENT_RULE = (
    "Um título conta como pago em até N dias quando, no SE1 (lido pelo R_E_C_N_O_, registro não "
    "excluído e com a mesma chave filial|prefixo|número|parcela|tipo|cliente|loja), o saldo "
    "(E1_SALDO) é zero (até R$ 0,005) e a data da última baixa (E1_BAIXA) é igual ou posterior "
    "à data de envio da carta e no máximo N dias depois dela. Cada título conta uma vez por "
    "carta; só entram os títulos de cartas enviadas. Para cartas enviadas há menos de N dias, "
    "a janela ainda está aberta e o número pode crescer."
)

STATUS_LABELS = {
    "sent": "Enviadas",
    "failed": "Falhas",
    "ambiguous": "Ambíguas",
    "paper": "Papel",
    "skipped": "Puladas",
}


@dataclass
class LayoutFigures:
    layout: str
    letters: int = 0
    sent: int = 0
    sent_total: Decimal = Decimal("0.00")
    failed_temporary: int = 0
    failed_permanent: int = 0
    ambiguous: int = 0
    print_needed: int = 0
    printed: int = 0
    skipped: int = 0
    pending: int = 0  # planned or sending
    responses: int | None = None
    titles: int = 0
    titles_balance: Decimal = Decimal("0.00")
    titles_missing: int = 0  # not found in SE1, deleted, or another título under that recno
    paid: dict[int, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS, 0))
    paid_balance: dict[int, Decimal] = field(
        default_factory=lambda: {n: Decimal("0.00") for n in WINDOWS}
    )

    @property
    def failed(self) -> int:
        return self.failed_temporary + self.failed_permanent

    @property
    def paper(self) -> int:
        return self.printed + self.print_needed

    def add(self, other: LayoutFigures) -> None:
        for name in (
            "letters", "sent", "sent_total", "failed_temporary", "failed_permanent",
            "ambiguous", "print_needed", "printed", "skipped", "pending", "titles",
            "titles_balance", "titles_missing",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.responses is not None:
            self.responses = (self.responses or 0) + other.responses
        for n in WINDOWS:
            self.paid[n] += other.paid[n]
            self.paid_balance[n] += other.paid_balance[n]

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "letters": self.letters,
            "sent": self.sent,
            "sent_total": str(self.sent_total),
            "failed": self.failed,
            "failed_temporary": self.failed_temporary,
            "failed_permanent": self.failed_permanent,
            "ambiguous": self.ambiguous,
            "printed": self.printed,
            "print_needed": self.print_needed,
            "skipped": self.skipped,
            "pending": self.pending,
            "responses": self.responses,
            "titles": self.titles,
            "titles_balance": str(self.titles_balance),
            "titles_missing": self.titles_missing,
            "paid_within": {str(n): self.paid[n] for n in WINDOWS},
            "paid_balance_within": {str(n): str(self.paid_balance[n]) for n in WINDOWS},
        }


@dataclass
class Report:
    date_from: date
    date_to: date
    generated_at: datetime
    layouts: list[LayoutFigures]
    responses_available: bool = False
    responses_by_kind: dict[str, int] = field(default_factory=dict)
    history_found: bool = True

    @property
    def total(self) -> LayoutFigures:
        total = LayoutFigures("Total")
        for figures in self.layouts:
            total.add(figures)
        # A response follows every layout that wrote to the customer: the total counts it once.
        total.responses = sum(self.responses_by_kind.values()) if self.responses_available else None
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "history_found": self.history_found,
            "responses_available": self.responses_available,
            "responses_by_kind": dict(sorted(self.responses_by_kind.items())),
            "windows_days": list(WINDOWS),
            "payment_rule": PAYMENT_RULE,
            "layouts": [f.as_dict() for f in self.layouts],
            "total": self.total.as_dict(),
        }


# --- command line --------------------------------------------------------------------------


def add_report_parser(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    report = commands.add_parser(
        "report",
        parents=parents,
        help="what the letters of a period did, per layout (sent, failed, paid within days)",
        description="Per layout, for the letters whose reference date falls in the period: "
        "letters sent, failed, ambiguous, printed and skipped, customer responses, and the "
        "títulos of sent letters paid within 7, 15 and 30 days of the letter.",
    )
    report.add_argument(
        "--from",
        dest="date_from",
        type=iso_date,
        metavar="YYYY-MM-DD",
        help="first reference date (default: 29 days before --to, 30 days in all)",
    )
    report.add_argument(
        "--to", dest="date_to", type=iso_date, metavar="YYYY-MM-DD", help="last reference date "
        "(default: today)",
    )  # fmt: skip
    report.add_argument(
        "--layout",
        action="append",
        default=[],
        metavar="LAYOUT",
        help="only this layout; repeatable (default: every layout configured or found)",
    )
    report.add_argument("--html", metavar="PATH", help="also write the report as an HTML page")
    report.add_argument("--format", choices=["table", "json"], default="table")


def report_command(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    today = datetime.now(config.zone).date()
    date_to = args.date_to or today
    date_from = args.date_from or date_to - timedelta(days=DEFAULT_DAYS - 1)
    if date_from > date_to:
        print(f"cobranca report: --from {date_from} is after --to {date_to}", file=sys.stderr)
        return EXIT_USAGE
    report = build_report(config, date_from, date_to, args.layout)
    if args.format == "json":
        json.dump(report.as_dict(), out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        out.write(format_table(report))
    if args.html:
        path = Path(args.html)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(config, report), encoding="utf-8")
        print(f"cobranca report: HTML written to {path}", file=sys.stderr)
    return EXIT_OK


# --- gathering ----------------------------------------------------------------------------


def build_report(
    config: Config, date_from: date, date_to: date, layouts: Sequence[str] = ()
) -> Report:
    zone = config.zone
    wanted = list(dict.fromkeys(layouts))
    figures: dict[str, LayoutFigures] = {
        name: LayoutFigures(name) for name in (wanted or [lay.name for lay in config.layouts])
    }
    report = Report(date_from, date_to, datetime.now(zone), [])
    history = _history_engine(config)
    if history is None:
        report.history_found = False
        report.layouts = list(figures.values())
        return report
    try:
        period = and_(LetterRecord.as_of >= date_from, LetterRecord.as_of <= date_to)
        if wanted:
            period = and_(period, LetterRecord.layout.in_(wanted))
        with Session(history) as session:
            _count_letters(session, period, figures)
            source = create_engine(config.source.engine_url())
            try:
                se1 = protheus.se1_table(
                    MetaData(), config.source.company, config.source.table_schema
                )
                _count_payments(session, period, figures, source, se1, zone)
            finally:
                source.dispose()
        if inspect(history).has_table(RESPONSES_TABLE):
            report.responses_available = True
            _count_responses(history, period, figures, report, zone)
    finally:
        history.dispose()
    report.layouts = [figures[name] for name in _ordered(figures, wanted, config)]
    return report


def _ordered(figures: dict[str, LayoutFigures], wanted: list[str], config: Config) -> list[str]:
    first = wanted or [lay.name for lay in config.layouts]
    return [*first, *sorted(set(figures) - set(first))]


def _history_engine(config: Config) -> Engine | None:
    """The history database, read only: None when it does not exist yet (no letters)."""
    return open_existing(config.history)


def _count_letters(session: Session, period: Any, figures: dict[str, LayoutFigures]) -> None:
    statement = (
        select(LetterRecord.layout, LetterRecord.status, LetterRecord.total)
        .where(period)
        .order_by(LetterRecord.id)
        .execution_options(yield_per=YIELD_PER)
    )
    for layout, status, total in session.execute(statement):
        f = figures.setdefault(layout, LayoutFigures(layout))
        f.letters += 1
        if status == LetterStatus.SENT:
            f.sent += 1
            f.sent_total += total or Decimal("0.00")
        elif status in (LetterStatus.FAILED_TEMPORARY, LetterStatus.FAILED_PERMANENT,
                        LetterStatus.AMBIGUOUS, LetterStatus.PRINT_NEEDED,
                        LetterStatus.PRINTED, LetterStatus.SKIPPED):  # fmt: skip
            name = str(status)
            setattr(f, name, getattr(f, name) + 1)
        else:
            f.pending += 1


@dataclass(frozen=True)
class _SentTitle:
    layout: str
    letter_day: date
    recno: int
    key: str
    balance: Decimal


def _sent_titles(session: Session, period: Any, zone: ZoneInfo) -> Iterator[_SentTitle]:
    """Títulos of the period's sent letters, streamed, each once per letter."""
    statement = (
        select(
            LetterRecord.id,
            LetterRecord.layout,
            LetterRecord.sent_at,
            LetterRecord.as_of,
            LetterTitleRecord.recno,
            LetterTitleRecord.title_key,
            LetterTitleRecord.balance,
        )
        .join(LetterTitleRecord, LetterTitleRecord.letter_id == LetterRecord.id)
        .where(period, LetterRecord.status == LetterStatus.SENT.value)
        .order_by(LetterRecord.id, LetterTitleRecord.id)
        .execution_options(yield_per=YIELD_PER)
    )
    current: int | None = None
    seen: set[int] = set()
    for letter_id, layout, sent_at, as_of, recno, key, balance in session.execute(statement):
        if letter_id != current:
            current, seen = letter_id, set()
        if recno in seen:
            continue
        seen.add(recno)
        day = sent_at.astimezone(zone).date() if sent_at is not None else as_of
        yield _SentTitle(layout, day, recno, key, balance or Decimal("0.00"))


def _chunks(items: Iterable[_SentTitle], size: int) -> Iterator[list[_SentTitle]]:
    """Groups of títulos whose distinct recnos number at most ``size``."""
    batch: list[_SentTitle] = []
    recnos: set[int] = set()
    for item in items:
        if item.recno not in recnos and len(recnos) >= size:
            yield batch
            batch, recnos = [], set()
        batch.append(item)
        recnos.add(item.recno)
    if batch:
        yield batch


def _count_payments(
    session: Session,
    period: Any,
    figures: dict[str, LayoutFigures],
    source: Engine,
    se1: Table,
    zone: ZoneInfo,
) -> None:
    t = se1.c
    with source.connect() as connection:
        for batch in _chunks(_sent_titles(session, period, zone), RECNO_CHUNK):
            recnos = sorted({item.recno for item in batch})
            rows = connection.execute(
                select(
                    t.R_E_C_N_O_, t.E1_SALDO, t.E1_BAIXA, t.E1_FILIAL, t.E1_PREFIXO, t.E1_NUM,
                    t.E1_PARCELA, t.E1_TIPO, t.E1_CLIENTE, t.E1_LOJA,
                ).where(t.R_E_C_N_O_.in_(recnos), t.D_E_L_E_T_ != protheus.DELETED)
            )  # fmt: skip
            found = {row.R_E_C_N_O_: row for row in rows}
            for item in batch:
                f = figures.setdefault(item.layout, LayoutFigures(item.layout))
                f.titles += 1
                f.titles_balance += item.balance
                row = found.get(item.recno)
                if row is None or _se1_key(row) != _clean_key(item.key):
                    f.titles_missing += 1
                    continue
                days = _days_to_payment(row, item.letter_day)
                if days is None:
                    continue
                for n in WINDOWS:
                    if days <= n:
                        f.paid[n] += 1
                        f.paid_balance[n] += item.balance


def _se1_key(row: Any) -> str:
    parts = (row.E1_FILIAL, row.E1_PREFIXO, row.E1_NUM, row.E1_PARCELA, row.E1_TIPO,
             row.E1_CLIENTE, row.E1_LOJA)  # fmt: skip
    return "|".join((part or "").strip() for part in parts)


def _clean_key(key: str) -> str:
    return "|".join(part.strip() for part in key.split("|"))


def _days_to_payment(row: Any, letter_day: date) -> int | None:
    """Days from the letter to the write-off of a settled título; None if not settled after it."""
    if row.E1_SALDO is None or float(row.E1_SALDO) > PAID_TOLERANCE:
        return None
    try:
        paid_on = protheus.parse_date(row.E1_BAIXA)
    except ValueError:
        return None
    if paid_on is None or paid_on < letter_day:
        return None
    return (paid_on - letter_day).days


def _count_responses(
    history: Engine, period: Any, figures: dict[str, LayoutFigures], report: Report, zone: ZoneInfo
) -> None:
    """Responses after a sent letter of the layout to the same customer; and all, by kind."""
    responses = Table(RESPONSES_TABLE, MetaData(), autoload_with=history)
    r = responses.c
    start = datetime.combine(report.date_from, time(), zone).astimezone(UTC)
    end = datetime.combine(report.date_to + timedelta(days=1), time(), zone).astimezone(UTC)
    letters = (
        select(
            LetterRecord.layout,
            LetterRecord.customer_code,
            LetterRecord.customer_store,
            func.min(LetterRecord.sent_at).label("first_sent"),
        )
        .where(period, LetterRecord.status == LetterStatus.SENT.value)
        .group_by(LetterRecord.layout, LetterRecord.customer_code, LetterRecord.customer_store)
        .subquery()
    )
    by_layout = (
        select(letters.c.layout, func.count())
        .select_from(letters)
        .join(
            responses,
            and_(
                r.customer_code == letters.c.customer_code,
                r.customer_store == letters.c.customer_store,
                r.created_at >= letters.c.first_sent,
            ),
        )
        .group_by(letters.c.layout)
    )
    by_kind = (
        select(r.kind, func.count())
        .where(r.created_at >= start, r.created_at < end)
        .group_by(r.kind)
    )
    for f in figures.values():
        f.responses = 0
    with history.connect() as connection:
        for layout, count in connection.execute(by_layout):
            figures.setdefault(layout, LayoutFigures(layout, responses=0)).responses = count
        report.responses_by_kind = {str(kind): count for kind, count in connection.execute(by_kind)}


# --- terminal -----------------------------------------------------------------------------


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%".replace(".", ",") if whole else "–"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(headers), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]


def format_table(report: Report) -> str:
    """The terminal view (English, like every command's output; the HTML page is for finance)."""
    out = [
        f"Collection report: letters with as-of dates from {report.date_from:%Y-%m-%d} "
        f"to {report.date_to:%Y-%m-%d}",
        "",
    ]
    if not report.history_found:
        out += ["(the history has no letters yet)", ""]
    rows = [*report.layouts, report.total]
    letters = [
        [
            f.layout, str(f.sent), money(f.sent_total), str(f.failed), str(f.ambiguous),
            str(f.printed), str(f.print_needed), str(f.skipped),
            "–" if f.responses is None else str(f.responses),
        ]
        for f in rows
    ]  # fmt: skip
    out += _table(
        ["Layout", "Sent", "Amount sent", "Failed", "Ambiguous", "Printed", "To print",
         "Skipped", "Responses"],
        letters,
    )  # fmt: skip
    out.append("")
    paid = [
        [f.layout, str(f.titles), money(f.titles_balance)]
        + [f"{f.paid[n]} ({_percent(f.paid[n], f.titles)})" for n in WINDOWS]
        + [money(f.paid_balance[WINDOWS[-1]]), str(f.titles_missing)]
        for f in rows
    ]
    out += _table(
        ["Layout", "Títulos", "Balance in letters"]
        + [f"Paid in {n} days" for n in WINDOWS]
        + [f"Amount paid in {WINDOWS[-1]} days", "Not in SE1"],
        paid,
    )
    out.append("")
    if not report.responses_available:
        out.append("Responses: the history records none (no cobranca_responses table).")
    elif report.responses_by_kind:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(report.responses_by_kind.items()))
        out.append(f"Responses recorded in the period, by kind: {kinds}")
    out += ["", *_wrap(PAYMENT_RULE_EN, 100), ""]
    return "\n".join(out).replace("\xa0", " ")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


# --- HTML ----------------------------------------------------------------------------------

PALETTE = {"sent": "#2563eb", "failed": "#dc2626", "paper": "#d97706"}
PAID_COLORS = {7: "#15803d", 15: "#22c55e", 30: "#86efac"}


def _svg_text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def bar_chart(
    title: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, float, str, str]]]],
    legend: Sequence[tuple[str, str]],
    *,
    maximum: float | None = None,
) -> Markup:
    """Horizontal grouped bars as inline SVG: groups of (label, [(series, value, text, color)])."""
    label_w, bar_h, gap, group_gap, chart_w, right = 190, 16, 4, 18, 420, 160
    legend_h = 34
    values = [v for _, bars in groups for _, v, _, _ in bars]
    top = maximum if maximum is not None else max([*values, 1])
    height = legend_h + sum(len(b) * (bar_h + gap) + group_gap for _, b in groups) + 10
    width = label_w + chart_w + right
    parts = [
        f'<svg role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    x = label_w
    for name, color in legend:
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" rx="2" fill="{color}"/>')
        parts.append(_svg_text(x + 17, 18, name, font_size="12", fill="#334155"))
        x += 30 + 7 * len(name)
    for step in range(5):
        gx = label_w + chart_w * step / 4
        parts.append(
            f'<line x1="{gx:.1f}" y1="{legend_h - 4}" x2="{gx:.1f}" y2="{height - 8}" '
            'stroke="#e2e8f0" stroke-width="1"/>'
        )
    y = legend_h
    for label, bars in groups:
        block = len(bars) * (bar_h + gap)
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            _svg_text(label_w - 10, y + block / 2 + 4, shown, text_anchor="end",
                      font_size="13", fill="#0f172a", font_weight="600")
        )  # fmt: skip
        for series, value, text, color in bars:
            w = chart_w * value / top if top else 0
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{max(w, 0.0):.1f}" height="{bar_h}" '
                f'rx="3" fill="{color}"><title>{escape(f"{label} – {series}: {text}")}</title>'
                "</rect>"
            )
            parts.append(_svg_text(label_w + w + 6, y + bar_h - 4, text, font_size="12",
                                   fill="#334155"))  # fmt: skip
            y += bar_h + gap
        y += group_gap
    parts.append("</svg>")
    return Markup("".join(parts))


def letters_chart(report: Report) -> Markup:
    groups = [
        (
            f.layout,
            [
                ("Enviadas", f.sent, str(f.sent), PALETTE["sent"]),
                ("Falhas", f.failed, str(f.failed), PALETTE["failed"]),
                ("Papel", f.paper, str(f.paper), PALETTE["paper"]),
            ],
        )
        for f in report.layouts
    ]
    legend = [("Enviadas", PALETTE["sent"]), ("Falhas", PALETTE["failed"]),
              ("Impressas + a imprimir", PALETTE["paper"])]  # fmt: skip
    return bar_chart("Cartas por layout", groups, legend)


def paid_chart(report: Report) -> Markup:
    groups = [
        (
            f.layout,
            [
                (f"{n} dias", 100 * f.paid[n] / f.titles if f.titles else 0,
                 f"{f.paid[n]} de {f.titles} ({_percent(f.paid[n], f.titles)})",
                 PAID_COLORS[n])
                for n in WINDOWS
            ],
        )
        for f in [*report.layouts, report.total]
    ]  # fmt: skip
    legend = [(f"em até {n} dias", PAID_COLORS[n]) for n in WINDOWS]
    return bar_chart("Títulos pagos após a carta", groups, legend, maximum=100)


def _environment(config: Config) -> jinja2.Environment:
    folders = [config.templates_dir / "relatorio", _REPO_TEMPLATES / "relatorio"]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in folders if p.is_dir()]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["percent"] = _percent
    return env


def render_html(config: Config, report: Report) -> str:
    template = _environment(config).get_template(TEMPLATE)
    total = report.total
    return template.render(
        report=report,
        total=total,
        windows=WINDOWS,
        creditor=config.creditor.name,
        letters_chart=letters_chart(report),
        paid_chart=paid_chart(report),
        payment_rule=PAYMENT_RULE,
        responses_by_kind=sorted(report.responses_by_kind.items()),
    )
