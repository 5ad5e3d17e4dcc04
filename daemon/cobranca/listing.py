"""`cobranca titles`: finance's list of open títulos, as the Protheus wizard (FINA811) lists them.

The títulos come from the same reading the letters use (live, collectible, abatements
subtracted, unreadable rows reported), narrowed by a `TitleFilter` or by a layout's own
selection (`--layout`: what that layout would pick today, before cadence). Rows are streamed
customer by customer and written as they come, so memory holds one batch of customers, never the
whole list; totals and the aging summary accumulate on the way.

Days are counted as ``days_from_due`` = as-of − real due date (E1_VENCREA), the measure the
filters (`--days-late-min/max`) and the aging buckets use, so a bucket holds exactly what the
matching filter lists. The CSV and JSON also carry ``days_late`` as the letters print it
(Protheus counts from E1_VENCTO once E1_VENCREA has passed).

The last letter sent to each customer is read from the history store, read only (nothing is
created there), with one query per batch of customers shown.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TextIO

from .arguments import amount, iso_date
from .config import Config, ConfigError
from .models import Customer, CustomerTitles, Title
from .protheus import CENTS
from .source import ProtheusSource, SourceError, TitleFilter

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2

EMPTY_MESSAGE = "no open títulos match"
# Customers written per history query (and held in memory at most, with their títulos).
BATCH_CUSTOMERS = 200
BATCH_TITLES = 5000


@dataclass(frozen=True)
class AgingBucket:
    code: str
    label: str
    low: int | None  # days_from_due, inclusive; None: no bound
    high: int | None

    def holds(self, days_from_due: int) -> bool:
        return (self.low is None or days_from_due >= self.low) and (
            self.high is None or days_from_due <= self.high
        )


AGING = (
    AgingBucket("not_due", "not yet due", None, 0),
    AgingBucket("1-15", "1–15 days late", 1, 15),
    AgingBucket("16-30", "16–30 days late", 16, 30),
    AgingBucket("31-60", "31–60 days late", 31, 60),
    AgingBucket("61-90", "61–90 days late", 61, 90),
    AgingBucket("over-90", "more than 90 days late", 91, None),
)


def aging_bucket(days_from_due: int) -> AgingBucket:
    return next(bucket for bucket in AGING if bucket.holds(days_from_due))


@dataclass
class Totals:
    """What accumulates while rows stream: counts and sums, never the rows themselves."""

    titles: int = 0
    customers: int = 0
    balance: Decimal = Decimal("0.00")
    aging_count: dict[str, int] = field(default_factory=lambda: {b.code: 0 for b in AGING})
    aging_balance: dict[str, Decimal] = field(
        default_factory=lambda: {b.code: Decimal("0.00") for b in AGING}
    )

    def add(self, title: Title) -> None:
        bucket = aging_bucket(title.days_from_due).code
        self.titles += 1
        self.balance += title.net_balance
        self.aging_count[bucket] += 1
        self.aging_balance[bucket] += title.net_balance


@dataclass(frozen=True)
class LastLetter:
    layout: str
    sent_on: date


# --- the history, read only -------------------------------------------------------------------


class LastLetterReader:
    """The last letter *sent* to each customer, from the history store, without writing to it.

    Unlike HistoryStore, it never creates the database or its tables: a history that does not
    exist yet simply has no letters. Any failure disables it with one warning; the list of
    títulos is still right without this column.
    """

    def __init__(self, config: Config, warn: TextIO):
        self.zone = config.zone
        self.warn = warn
        self.engine: Any = None
        try:
            from .history import open_existing

            self.engine = open_existing(config.history)
        except Exception as exc:  # any failure only loses this column
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        from .runner import error_text

        print(f"cobranca titles: warning: last letters not shown: {error_text(exc)}",
              file=self.warn)  # fmt: skip
        self.close()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def last_letters(self, customers: Iterable[Customer]) -> dict[tuple[str, str], LastLetter]:
        """(code, store) → the letter last sent (latest sent_at) to these customers; one query."""
        wanted = {(c.code, c.store) for c in customers}
        if self.engine is None or not wanted:
            return {}
        from sqlalchemy import func, select

        from .history import LetterRecord as L
        from .models import LetterStatus

        recency = (
            func.row_number()
            .over(
                partition_by=(L.customer_code, L.customer_store),
                order_by=(L.sent_at.desc(), L.id.desc()),
            )
            .label("recency")
        )
        ranked = (
            select(L.customer_code, L.customer_store, L.layout, L.sent_at, recency)
            .where(
                L.status == LetterStatus.SENT.value,
                L.sent_at.is_not(None),
                L.customer_code.in_(sorted({code for code, _ in wanted})),
            )
            .subquery()
        )
        found: dict[tuple[str, str], LastLetter] = {}
        try:
            with self.engine.connect() as connection:
                for row in connection.execute(select(ranked).where(ranked.c.recency == 1)):
                    key = (row.customer_code, row.customer_store)
                    if key in wanted:
                        found[key] = LastLetter(
                            row.layout, row.sent_at.astimezone(self.zone).date()
                        )
        except Exception as exc:  # as above: the list stands without it
            self._fail(exc)
            return {}
        return found


# --- output -----------------------------------------------------------------------------------

CSV_COLUMNS = (
    "customer_code", "customer_store", "customer_name", "customer_short_name",
    "customer_blocked", "key", "branch", "prefix", "number", "installment", "type",
    "situation", "issue_date", "due_date", "real_due_date", "days_from_due", "days_late",
    "aging", "value", "balance", "abatements", "net_balance", "last_letter_layout",
    "last_letter_date",
)  # fmt: skip
_TEXT_COLUMNS = {
    "customer_code", "customer_store", "customer_name", "customer_short_name", "key", "branch",
    "prefix", "number", "installment", "type", "situation",
}  # fmt: skip


def title_record(customer: Customer, title: Title, last: LastLetter | None) -> dict[str, Any]:
    """One título as the CSV row and the JSON object carry it (amounts as exact strings)."""

    def iso(day: date | None) -> str | None:
        return day.isoformat() if day else None

    return {
        "customer_code": customer.code,
        "customer_store": customer.store,
        "customer_name": customer.name,
        "customer_short_name": customer.short_name,
        "customer_blocked": customer.blocked,
        "key": title.key,
        "branch": title.branch,
        "prefix": title.prefix,
        "number": title.number,
        "installment": title.installment,
        "type": title.type,
        "situation": title.situation,
        "issue_date": iso(title.issue_date),
        "due_date": iso(title.due_date),
        "real_due_date": iso(title.real_due_date),
        "days_from_due": title.days_from_due,
        "days_late": title.days_late,
        "aging": aging_bucket(title.days_from_due).code,
        "value": _plain(title.value),
        "balance": _plain(title.balance),
        "abatements": _plain(title.abatements),
        "net_balance": _plain(title.net_balance),
        "last_letter_layout": last.layout if last else None,
        "last_letter_date": iso(last.sent_on) if last else None,
    }


def _plain(amount: Decimal) -> str:
    return str(amount.quantize(CENTS, ROUND_HALF_UP))


def _aging_records(totals: Totals) -> list[dict[str, Any]]:
    return [
        {
            "bucket": b.code,
            "label": b.label,
            "min_days": b.low,
            "max_days": b.high,
            "titles": totals.aging_count[b.code],
            "balance": _plain(totals.aging_balance[b.code]),
        }
        for b in AGING
    ]


class Writer:
    def __init__(self, out: TextIO, as_of: date, last_letter: bool):
        self.out = out
        self.as_of = as_of
        self.last_letter = last_letter

    def customer(self, group: CustomerTitles, last: LastLetter | None) -> None:
        raise NotImplementedError

    def finish(self, totals: Totals, rejected: Sequence[tuple[str, str]]) -> None:
        raise NotImplementedError


class TableWriter(Writer):
    """What a person reads: one block per customer with its subtotal, then totals and aging."""

    ROW = (
        "  {branch:<6} {prefix:<4} {number:<10} {inst:<4} {type:<4} {sit:<3} {due:<11} {days:>5}"
        " {balance:>18}"
    )

    def __init__(self, out: TextIO, as_of: date, last_letter: bool):
        super().__init__(out, as_of, last_letter)
        from .render import money

        self.money = money
        self.started = False

    def _line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def customer(self, group: CustomerTitles, last: LastLetter | None) -> None:
        if not self.started:
            self.started = True
            self._line(f"Open títulos as of {self.as_of:%d/%m/%Y} "
                       "(Dias: days after the real due date; negative: not yet due)")  # fmt: skip
            self._line()
            self._line(self.ROW.format(branch="Filial", prefix="Pref", number="Número",
                                       inst="Parc", type="Tipo", sit="Sit", due="Vencto real",
                                       days="Dias", balance="Saldo"))  # fmt: skip
        customer = group.customer
        heading = f"{customer.key}  {customer.short_name or customer.name}"
        if customer.blocked:
            heading += "  [blocked]"
        if self.last_letter:
            heading += "  — last letter: " + (
                f"{last.layout} on {last.sent_on:%d/%m/%Y}" if last else "none"
            )
        self._line()
        self._line(heading)
        subtotal = Decimal("0.00")
        for t in group.titles:
            subtotal += t.net_balance
            self._line(self.ROW.format(
                branch=t.branch, prefix=t.prefix, number=t.number, inst=t.installment,
                type=t.type, sit=t.situation, due=f"{t.real_due_date:%d/%m/%Y}",
                days=t.days_from_due, balance=self.money(t.net_balance),
            ))  # fmt: skip
        count = len(group.titles)
        label = f"  subtotal {customer.key}: {count} título{'s' if count != 1 else ''}"
        self._line(f"{label:<57}{self.money(subtotal):>18}")

    def finish(self, totals: Totals, rejected: Sequence[tuple[str, str]]) -> None:
        if not totals.titles:
            self._line(EMPTY_MESSAGE)
            return
        self._line()
        label = f"TOTAL: {totals.titles} títulos of {totals.customers} customers"
        self._line(f"{label:<57}{self.money(totals.balance):>18}")
        self._line()
        self._line("Aging (days after the real due date)")
        for bucket in AGING:
            self._line(f"  {bucket.label:<26}{totals.aging_count[bucket.code]:>8}"
                       f"{self.money(totals.aging_balance[bucket.code]):>20}")  # fmt: skip
        self._line(f"  {'total':<26}{totals.titles:>8}{self.money(totals.balance):>20}")


class CsvWriter(Writer):
    """One row per título, header first: comma-separated (RFC 4180), dot decimals, ISO dates.

    Text from the ERP that a spreadsheet would take as a formula (=, +, -, @ first) is prefixed
    with an apostrophe.
    """

    def __init__(self, out: TextIO, as_of: date, last_letter: bool):
        super().__init__(out, as_of, last_letter)
        self.csv = csv.writer(out)
        self.csv.writerow(CSV_COLUMNS)

    def customer(self, group: CustomerTitles, last: LastLetter | None) -> None:
        for title in group.titles:
            record = title_record(group.customer, title, last)
            self.csv.writerow([_csv_cell(name, record[name]) for name in CSV_COLUMNS])

    def finish(self, totals: Totals, rejected: Sequence[tuple[str, str]]) -> None:
        pass


def _csv_cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in _TEXT_COLUMNS and isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


class JsonWriter(Writer):
    """One JSON document, written as it streams: títulos, then totals, aging and rejected."""

    def __init__(self, out: TextIO, as_of: date, last_letter: bool):
        super().__init__(out, as_of, last_letter)
        self.first = True
        out.write(f'{{\n  "as_of": "{as_of.isoformat()}",\n  "titles": [')

    def customer(self, group: CustomerTitles, last: LastLetter | None) -> None:
        for title in group.titles:
            record = title_record(group.customer, title, last)
            self.out.write(("\n    " if self.first else ",\n    ") + _dumps(record))
            self.first = False

    def finish(self, totals: Totals, rejected: Sequence[tuple[str, str]]) -> None:
        tail = {
            "totals": {
                "titles": totals.titles,
                "customers": totals.customers,
                "balance": _plain(totals.balance),
            },
            "aging": _aging_records(totals),
            "rejected": [{"title": key, "reason": reason} for key, reason in rejected],
        }
        self.out.write("\n  ]," if not self.first else "],")
        body = json.dumps(tail, indent=2, ensure_ascii=False)
        self.out.write("\n" + body[1:].lstrip("\n") + "\n")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


WRITERS: dict[str, type[Writer]] = {"table": TableWriter, "csv": CsvWriter, "json": JsonWriter}


# --- the command ------------------------------------------------------------------------------


def _listed(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated options, each possibly comma-separated: --type NF,DP --type BOL."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """The título filters shared by `titles` and `send` (see title_filter)."""
    parser.add_argument(
        "--customer",
        action="append",
        default=[],
        metavar="CODE[/STORE]",
        help="only this customer (repeatable; comma-separated lists too)",
    )
    parser.add_argument(
        "--name",
        metavar="TEXT",
        help="customer name or short name contains TEXT (any case, taken "
        "literally: %% and _ are not wildcards)",
    )
    parser.add_argument(
        "--branch",
        action="append",
        default=[],
        metavar="FILIAL",
        help="only this branch (repeatable)",
    )
    parser.add_argument(
        "--due-from", type=iso_date, metavar="YYYY-MM-DD", help="real due date on or after"
    )
    parser.add_argument(
        "--due-to", type=iso_date, metavar="YYYY-MM-DD", help="real due date on or before"
    )
    parser.add_argument(
        "--days-late-min",
        type=int,
        metavar="N",
        help="at least N days after the real due date (negative: before it)",
    )
    parser.add_argument(
        "--days-late-max", type=int, metavar="N", help="at most N days after the real due date"
    )
    parser.add_argument(
        "--min-balance",
        type=amount,
        metavar="AMOUNT",
        help="balance net of abatements at least AMOUNT (e.g. 100.00)",
    )
    parser.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="TIPO",
        help="only this título type, e.g. NF (repeatable)",
    )
    parser.add_argument(
        "--situation",
        action="append",
        default=[],
        metavar="CODE",
        help="only this E1_SITUACA (repeatable; default: every situation)",
    )
    parser.add_argument(
        "--title",
        action="append",
        default=[],
        metavar="KEY",
        help="only this título: filial|prefixo|num|parcela|tipo|cliente|loja (repeatable)",
    )


def add_titles_parser(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> Any:
    """Add the `titles` subcommand to the CLI's subparsers."""
    parser = commands.add_parser(
        "titles",
        parents=list(parents),
        help="list open títulos (filters, subtotals, aging, last letter)",
        description="List open títulos as the letters read them: live, collectible, net of "
        "abatements. Days are counted from the real due date (E1_VENCREA).",
    )
    add_filter_arguments(parser)
    parser.add_argument(
        "--layout",
        metavar="LAYOUT",
        help="what this layout would select on the as-of date (its selection "
        "and minimum; cadence not applied); combines only with --customer",
    )
    parser.add_argument(
        "--as-of", type=iso_date, metavar="YYYY-MM-DD", help="reference date (default: today)"
    )
    parser.add_argument(
        "--format", choices=list(WRITERS), default="table", help="table (default), csv or json"
    )
    parser.add_argument(
        "--last-letter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the last letter sent to each customer (default: on)",
    )
    return parser


_FILTER_OPTIONS = (
    ("name", "--name"), ("branch", "--branch"), ("due_from", "--due-from"),
    ("due_to", "--due-to"), ("days_late_min", "--days-late-min"),
    ("days_late_max", "--days-late-max"), ("min_balance", "--min-balance"), ("type", "--type"),
    ("situation", "--situation"), ("title", "--title"),
)  # fmt: skip


class _Usage(Exception):
    pass


def title_filter(args: argparse.Namespace) -> TitleFilter:
    """The TitleFilter the command line asks for (ValueError when it cannot be right)."""
    name = args.name
    if name is not None and not name.strip():
        raise ValueError("--name needs some text")
    return TitleFilter(
        customers=_listed(args.customer),
        name_contains=(name or "").strip(),
        branches=_listed(args.branch),
        due_from=args.due_from,
        due_to=args.due_to,
        days_late_min=args.days_late_min,
        days_late_max=args.days_late_max,
        min_balance=args.min_balance if args.min_balance is not None else Decimal("0.00"),
        types=_listed(args.type),
        situations=_listed(args.situation),
        title_keys=tuple(args.title),
    )


def _groups(
    config: Config, source: ProtheusSource, args: argparse.Namespace, as_of: date
) -> Iterator[CustomerTitles]:
    """The customers to list, as the source streams them; bad arguments raise _Usage first."""
    if args.layout is None:
        try:
            wanted = title_filter(args)
        except ValueError as exc:
            raise _Usage(str(exc)) from None
        return source.open_titles(wanted, as_of)
    given = [flag for dest, flag in _FILTER_OPTIONS if getattr(args, dest) not in (None, [])]
    if given:
        raise _Usage(
            f"--layout lists what that layout selects; it combines only with --customer "
            f"(remove {', '.join(given)})"
        )
    try:
        layout = config.layout(args.layout)
        customers = TitleFilter(customers=_listed(args.customer)).customers
    except (ConfigError, ValueError) as exc:
        raise _Usage(str(exc)) from None
    from .plan import plan_letter

    def selected() -> Iterator[CustomerTitles]:
        for group in source.customers_titles(layout.selection, as_of, customers):
            # The plan's own rule (net balance ≥ the layout's minimum), without the cadence.
            letter = plan_letter(group, layout, as_of, None)
            yield CustomerTitles(group.customer, letter.titles, letter.rejected)

    return selected()


def titles_command(
    config: Config,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run `cobranca titles`; 0 listed (or nothing matched), 2 bad arguments."""
    out = out or sys.stdout
    err = err or sys.stderr
    as_of = args.as_of or datetime.now(config.zone).date()
    try:
        source = ProtheusSource(config.source)
    except SourceError as exc:
        print(f"cobranca titles: {exc}", file=err)
        return EXIT_FAILURES
    reader: LastLetterReader | None = None
    try:
        try:
            groups = _groups(config, source, args, as_of)
        except _Usage as exc:
            print(f"cobranca titles: {exc}", file=err)
            return EXIT_USAGE
        if args.last_letter:
            reader = LastLetterReader(config, err)
        writer = WRITERS[args.format](out, as_of, args.last_letter)
        totals, rejected = _write(groups, writer, reader)
        writer.finish(totals, rejected)
        out.flush()
    except BrokenPipeError:
        _quiet_stdout(out)  # the reader (e.g. `| head`) has what it wanted
        return EXIT_FAILURES
    finally:
        if reader is not None:
            reader.close()
        source.close()
    if not totals.titles and args.format != "table":
        print(EMPTY_MESSAGE, file=err)
    if rejected:
        print(f"cobranca titles: {len(rejected)} título(s) left out:", file=err)
        for key, reason in rejected:
            print(f"  {key}: {reason}", file=err)
    return EXIT_OK


def _write(
    groups: Iterator[CustomerTitles], writer: Writer, reader: LastLetterReader | None
) -> tuple[Totals, list[tuple[str, str]]]:
    """Write customers in batches (one history query per batch); totals accumulate."""
    totals = Totals()
    rejected: list[tuple[str, str]] = []
    batch: list[CustomerTitles] = []
    held = 0

    def flush() -> None:
        letters = reader.last_letters(g.customer for g in batch) if reader else {}
        for group in batch:
            customer = group.customer
            writer.customer(group, letters.get((customer.code, customer.store)))
            totals.customers += 1
            for title in group.titles:
                totals.add(title)
        batch.clear()

    for group in groups:
        rejected.extend(group.rejected)
        if not group.titles:
            continue
        batch.append(group)
        held += len(group.titles)
        if reader is None or len(batch) >= BATCH_CUSTOMERS or held >= BATCH_TITLES:
            flush()
            held = 0
    flush()
    return totals, rejected


def _quiet_stdout(out: TextIO) -> None:
    """After EPIPE, point the stream at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (AttributeError, OSError, ValueError):
        pass
