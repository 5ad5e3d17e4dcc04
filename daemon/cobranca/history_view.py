"""`cobranca history`: the letters on record, for finance and auditors, read only.

``history [list]`` lists letters (filters by customer, layout, título key, status, as-of range
and run) as a table, CSV or JSON, streamed from the database in batches: memory holds one batch
of letters with their títulos, never the whole table. ``history show LETTER_ID`` prints one
letter whole: every field, its títulos, where it came from (the run's config digest, the
templates digest, the layout rule), its audit events and the message as sent; ``--raw`` prints
only the message, byte for byte, to pipe into a mail client.

Customer responses (table ``cobranca_responses``, when the database has it) are shown after each
letter: a response that names its letter (``letter_id``) under that letter only; any other, of
the same customer and recorded at or after the letter was created, when it is about the whole
customer (no título key) or about a título the letter carried.

Nothing is created or written: a history database that does not exist yet has no letters.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from email import message_from_string, policy
from email.message import EmailMessage, Message
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import MetaData, Table, and_, inspect, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .arguments import iso_date
from .config import Config
from .history import LetterEventRecord, LetterRecord, LetterTitleRecord, RunRecord, open_existing
from .models import LetterStatus
from .render import money, short_date

EXIT_OK = 0
EXIT_USAGE = 2

RESPONSES_TABLE = "cobranca_responses"
TABLE_LIMIT = 200  # default rows of the table format; csv and json are unlimited by default
BATCH = 500  # letters fetched (and held, with their títulos) per round trip

CSV_FIELDS = (
    "id", "run_id", "layout", "as_of", "customer_code", "customer_store", "customer_name",
    "status", "reason", "needs_print", "operator", "transport", "recipients", "subject",
    "message_id", "total", "titles", "title_keys", "created_at", "sent_at", "responses",
)  # fmt: skip


class HistoryUsage(Exception):
    """The command line asks for something that cannot be answered (exit 2)."""


# --- the parser -------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def add_history_parser(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> Any:
    """Add the `history` subcommand (`history [list] ...`, `history show ID [--raw]`)."""
    parser = commands.add_parser(
        "history",
        parents=list(parents),
        help="letters on record: list them, or show one whole (events, provenance, message)",
        description="Read the history store: `history [list]` lists letters; "
        "`history show LETTER_ID [--raw]` prints one letter whole.",
    )
    parser.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "show"],
        help="list (default) or show",
    )
    parser.add_argument(
        "letter", nargs="?", type=_positive, metavar="LETTER_ID", help="the letter to show"
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="show: print only the message exactly as sent (RFC 5322), to pipe to a mail client",
    )
    parser.add_argument(
        "--customer",
        action="append",
        default=[],
        metavar="CODE[/STORE]",
        help="only this customer (repeatable; comma-separated lists too)",
    )
    parser.add_argument(
        "--layout", action="append", default=[], metavar="LAYOUT", help="only this layout"
    )
    parser.add_argument(
        "--title",
        action="append",
        default=[],
        metavar="KEY",
        help="only letters that carried this título key (repeatable)",
    )
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help="only this status (repeatable; comma-separated lists too)",
    )
    parser.add_argument(
        "--from", dest="date_from", type=iso_date, metavar="YYYY-MM-DD", help="as-of on or after"
    )
    parser.add_argument(
        "--to", dest="date_to", type=iso_date, metavar="YYYY-MM-DD", help="as-of on or before"
    )
    parser.add_argument(
        "--run", action="append", default=[], type=_positive, metavar="RUN_ID", help="only run"
    )
    parser.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="list format"
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        metavar="N",
        help=f"at most N letters (default: {TABLE_LIMIT} for table, all for csv and json)",
    )
    return parser


# --- filters ----------------------------------------------------------------------------------


def _listed(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class LetterFilter:
    customers: tuple[tuple[str, str | None], ...] = ()
    layouts: tuple[str, ...] = ()
    title_keys: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    runs: tuple[int, ...] = ()

    def statement(self) -> Any:
        statement = select(LetterRecord).order_by(LetterRecord.id)
        if self.customers:
            statement = statement.where(
                or_(
                    *(
                        and_(LetterRecord.customer_code == code, LetterRecord.customer_store == st)
                        if st is not None
                        else LetterRecord.customer_code == code
                        for code, st in self.customers
                    )
                )
            )
        if self.layouts:
            statement = statement.where(LetterRecord.layout.in_(self.layouts))
        if self.statuses:
            statement = statement.where(LetterRecord.status.in_(self.statuses))
        if self.date_from is not None:
            statement = statement.where(LetterRecord.as_of >= self.date_from)
        if self.date_to is not None:
            statement = statement.where(LetterRecord.as_of <= self.date_to)
        if self.runs:
            statement = statement.where(LetterRecord.run_id.in_(self.runs))
        if self.title_keys:
            carried = select(LetterTitleRecord.letter_id).where(
                LetterTitleRecord.title_key.in_(self.title_keys)
            )
            statement = statement.where(LetterRecord.id.in_(carried))
        return statement


def letter_filter(args: argparse.Namespace) -> LetterFilter:
    """The filter the command line asks for; HistoryUsage when it cannot be right."""
    customers: list[tuple[str, str | None]] = []
    for item in _listed(args.customer):
        code, _, store = item.partition("/")
        if not code.strip() or ("/" in item and not store.strip()):
            raise HistoryUsage(f"--customer wants CODE or CODE/STORE, got {item!r}")
        customers.append((code.strip(), store.strip() or None))
    statuses = _listed(args.status)
    known = {s.value for s in LetterStatus}
    for status in statuses:
        if status not in known:
            raise HistoryUsage(
                f"unknown status {status!r}; one of: {', '.join(s.value for s in LetterStatus)}"
            )
    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise HistoryUsage(f"--from {args.date_from} is after --to {args.date_to}")
    titles = [key for key in args.title if key.strip()]
    if len(titles) != len(args.title):
        raise HistoryUsage("--title needs a título key")
    return LetterFilter(
        customers=tuple(customers),
        layouts=tuple(_listed(args.layout)),
        title_keys=tuple(dict.fromkeys(titles + [key.strip() for key in titles])),
        statuses=tuple(statuses),
        date_from=args.date_from,
        date_to=args.date_to,
        runs=tuple(args.run),
    )


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    id: Any
    customer_code: str
    customer_store: str
    title_key: str | None
    kind: str
    created_at: datetime | None
    operator: str
    note: str
    closed_at: datetime | None
    letter_id: int | None = None  # when the response names the letter it answers
    amount: Decimal | None = None
    promised_date: date | None = None


def _utc(value: Any) -> datetime | None:
    """A timestamp read by any driver (aware, naive UTC, or SQLite text) as aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


class HistoryReader:
    """Read-only access to the history store; never creates the database or its tables."""

    def __init__(self, config: Config):
        self.engine: Engine | None = None
        self.responses: Table | None = None
        self.engine = open_existing(config.history)
        if self.engine is None:
            return
        if inspect(self.engine).has_table(RESPONSES_TABLE):
            self.responses = Table(RESPONSES_TABLE, MetaData(), autoload_with=self.engine)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def batches(
        self, wanted: LetterFilter, limit: int | None
    ) -> Iterator[list[tuple[LetterRecord, list[LetterTitleRecord], list[Response]]]]:
        """Letters in id order, a batch at a time, each with its títulos and responses."""
        if self.engine is None:
            return
        statement = wanted.statement()
        if limit is not None:
            statement = statement.limit(limit)
        with Session(self.engine) as session:
            result = session.scalars(statement.execution_options(yield_per=BATCH))
            for partition in result.partitions():
                letters = list(partition)
                titles = self._titles(session, [letter.id for letter in letters])
                responses = self._responses(letters, titles)
                yield [(r, titles.get(r.id, []), responses.get(r.id, [])) for r in letters]
                session.expunge_all()

    def _titles(self, session: Session, ids: list[int]) -> dict[int, list[LetterTitleRecord]]:
        found: dict[int, list[LetterTitleRecord]] = {}
        statement = (
            select(LetterTitleRecord)
            .where(LetterTitleRecord.letter_id.in_(ids))
            .order_by(LetterTitleRecord.id)
        )
        for title in session.scalars(statement):
            found.setdefault(title.letter_id, []).append(title)
        return found

    def _responses(
        self, letters: list[LetterRecord], titles: dict[int, list[LetterTitleRecord]]
    ) -> dict[int, list[Response]]:
        """Responses recorded after each letter, one query per batch (nothing without the table)."""
        if self.engine is None or self.responses is None or not letters:
            return {}
        table = self.responses
        codes = sorted({letter.customer_code for letter in letters})
        by_customer: dict[tuple[str, str], list[Response]] = {}
        statement = select(table).where(table.c.customer_code.in_(codes)).order_by(table.c.id)
        with self.engine.connect() as connection:
            for row in connection.execute(statement):
                values = row._mapping
                response = Response(
                    id=values["id"],
                    customer_code=str(values["customer_code"] or "").strip(),
                    customer_store=str(values["customer_store"] or "").strip(),
                    title_key=values["title_key"] or None,
                    kind=str(values["kind"] or ""),
                    created_at=_utc(values["created_at"]),
                    operator=str(values["operator"] or ""),
                    note=str(values["note"] or ""),
                    closed_at=_utc(values["closed_at"]),
                    letter_id=values.get("letter_id"),
                    amount=_decimal(values.get("amount")),
                    promised_date=_day(values.get("promised_date")),
                )
                key = (response.customer_code, response.customer_store)
                by_customer.setdefault(key, []).append(response)
        found: dict[int, list[Response]] = {}
        for letter in letters:
            keys = {title.title_key for title in titles.get(letter.id, [])}
            keys |= {key.strip() for key in keys}
            since = _utc(letter.created_at)
            customer = (letter.customer_code.strip(), letter.customer_store.strip())
            found[letter.id] = [
                response
                for response in by_customer.get(customer, [])
                if response.letter_id == letter.id
                or (
                    response.letter_id is None
                    and (
                        response.created_at is None or since is None or response.created_at >= since
                    )
                    and (response.title_key is None or response.title_key in keys)
                )
            ]
        return found

    def one(
        self, letter_id: int
    ) -> tuple[LetterRecord, RunRecord | None, list[LetterTitleRecord], list[LetterEventRecord],
               list[Response]] | None:  # fmt: skip
        if self.engine is None:
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            letter = session.get(LetterRecord, letter_id)
            if letter is None:
                return None
            run = session.get(RunRecord, letter.run_id)
            titles = self._titles(session, [letter_id]).get(letter_id, [])
            events = list(
                session.scalars(
                    select(LetterEventRecord)
                    .where(LetterEventRecord.letter_id == letter_id)
                    .order_by(LetterEventRecord.seq)
                )
            )
            session.expunge_all()
        responses = self._responses([letter], {letter_id: titles}).get(letter_id, [])
        return letter, run, titles, events, responses


# --- formatting -------------------------------------------------------------------------------


def _local(value: datetime | None, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def _plain(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _response_line(response: Response, zone: ZoneInfo) -> str:
    about = response.title_key or "customer"
    if response.amount is not None:
        about += f", {money(response.amount)}"
    if response.promised_date is not None:
        about += f", promised for {short_date(response.promised_date)}"
    closed = f", closed {_local(response.closed_at, zone)}" if response.closed_at else ""
    note = f": {response.note}" if response.note else ""
    return (
        f"response {response.id} {response.kind} ({about}) {_local(response.created_at, zone)}"
        f" by {response.operator or '?'}{closed}{note}"
    )


def _response_json(response: Response) -> dict[str, Any]:
    return {
        "id": response.id,
        "customer_code": response.customer_code,
        "customer_store": response.customer_store,
        "title_key": response.title_key,
        "kind": response.kind,
        "created_at": _iso(response.created_at) or None,
        "operator": response.operator,
        "note": response.note,
        "closed_at": _iso(response.closed_at) or None,
        "letter_id": response.letter_id,
        "amount": _plain(response.amount) or None,
        "promised_date": response.promised_date.isoformat() if response.promised_date else None,
    }


def letter_json(
    letter: LetterRecord, titles: list[LetterTitleRecord], responses: list[Response]
) -> dict[str, Any]:
    """One letter as the JSON list writes it (money as exact decimal strings, times in UTC)."""
    return {
        "id": letter.id,
        "run_id": letter.run_id,
        "layout": letter.layout,
        "as_of": letter.as_of.isoformat(),
        "customer_code": letter.customer_code,
        "customer_store": letter.customer_store,
        "customer_name": letter.customer_name,
        "status": letter.status,
        "reason": letter.reason,
        "needs_print": bool(letter.needs_print),
        "operator": letter.operator,
        "transport": letter.transport,
        "recipients": [r.strip() for r in letter.recipients.split(",") if r.strip()],
        "subject": letter.subject,
        "message_id": letter.message_id,
        "total": _plain(letter.total),
        "created_at": _iso(letter.created_at) or None,
        "sent_at": _iso(letter.sent_at) or None,
        "titles": [
            {
                "title_key": t.title_key,
                "recno": t.recno,
                "real_due_date": t.real_due_date.isoformat(),
                "days_late": t.days_late,
                "value": _plain(t.value),
                "balance": _plain(t.balance),
            }
            for t in titles
        ],
        "responses": [_response_json(r) for r in responses],
    }


def _csv_row(
    letter: LetterRecord, titles: list[LetterTitleRecord], responses: list[Response]
) -> dict[str, Any]:
    data = letter_json(letter, titles, responses)
    data["recipients"] = ", ".join(data["recipients"])
    data["needs_print"] = "yes" if letter.needs_print else "no"
    data["titles"] = len(titles)
    data["title_keys"] = "; ".join(t.title_key for t in titles)
    data["created_at"] = data["created_at"] or ""
    data["sent_at"] = data["sent_at"] or ""
    data["responses"] = "; ".join(
        f"{r.kind}@{_iso(r.created_at)}" + (f"[{r.title_key}]" if r.title_key else "")
        for r in responses
    )
    return {name: data[name] for name in CSV_FIELDS}


def _table_line(letter: LetterRecord, titles: list[LetterTitleRecord]) -> str:
    customer = f"{letter.customer_code}/{letter.customer_store}"
    return (
        f"{letter.id:>7}  {letter.as_of}  {letter.layout:<22} {customer:<12} "
        f"{letter.customer_name[:28]:<28} {letter.status:<16} {len(titles):>3} "
        f"{money(letter.total):>16}  {letter.reason}"
    ).rstrip()


def _write_list(
    reader: HistoryReader, wanted: LetterFilter, args: argparse.Namespace, zone: ZoneInfo,
    out: TextIO,
) -> int:  # fmt: skip
    fmt = args.format
    limit = args.limit if args.limit is not None else (TABLE_LIMIT if fmt == "table" else None)
    fetch = limit + 1 if (limit is not None and fmt == "table") else limit
    count = 0
    more = False
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
    elif fmt == "json":
        out.write("[")
    else:
        out.write(
            f"{'ID':>7}  {'AS OF':<10}  {'LAYOUT':<22} {'CUSTOMER':<12} {'NAME':<28} "
            f"{'STATUS':<16} {'TIT':>3} {'TOTAL':>16}  REASON\n"
        )
    for batch in reader.batches(wanted, fetch):
        for letter, titles, responses in batch:
            if limit is not None and count >= limit:
                more = True
                break
            count += 1
            if fmt == "csv":
                writer.writerow(_csv_row(letter, titles, responses))
            elif fmt == "json":
                out.write("\n  " if count == 1 else ",\n  ")
                out.write(json.dumps(letter_json(letter, titles, responses), ensure_ascii=False))
            else:
                out.write(_table_line(letter, titles) + "\n")
                for response in responses:
                    out.write(f"{'':>9}↳ {_response_line(response, zone)}\n")
    if fmt == "json":
        out.write("\n]\n" if count else "]\n")
    elif fmt == "table":
        shown = f"{count} letter(s)"
        if more:
            shown += f" (the first {limit}; --limit N to see more, or --format csv)"
        out.write(shown + "\n")
    return EXIT_OK


def _message(raw: str) -> Message:
    return message_from_string(raw, policy=policy.default)


def _write_show(found: tuple[Any, ...], zone: ZoneInfo, out: TextIO) -> None:
    letter, run, titles, events, responses = found
    line = out.write
    line(f"Letter {letter.id}\n")
    skip = {"id", "rule", "raw_message", "total"}
    for column in LetterRecord.__table__.columns:
        if column.key in skip:
            continue
        value = getattr(letter, column.key)
        if isinstance(value, datetime):
            value = _local(value, zone)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        line(f"  {column.key:<17} {'' if value is None else value}\n")
    line(f"  {'total':<17} {money(letter.total)}\n")

    line(f"\nTítulos ({len(titles)})\n")
    if titles:
        line(f"  {'KEY':<44} {'RECNO':>8} {'DUE':>10} {'DAYS':>5} {'VALUE':>16} {'BALANCE':>16}\n")
    for t in titles:
        line(
            f"  {t.title_key:<44} {t.recno:>8} {short_date(t.real_due_date):>10} "
            f"{t.days_late:>5} {money(t.value):>16} {money(t.balance):>16}\n"
        )
    if titles:
        balance = sum((t.balance for t in titles), Decimal("0.00"))
        line(f"  {'total':<44} {'':>8} {'':>10} {'':>5} {'':>16} {money(balance):>16}\n")

    line("\nProvenance\n")
    line(f"  {'as_of':<17} {letter.as_of}\n")
    if run is not None:
        line(f"  {'run':<17} {run.id} ({run.trigger}, {run.status}, worker {run.worker}, "
             f"started {_local(run.started_at, zone)})\n")  # fmt: skip
        line(f"  {'config_digest':<17} {run.config_digest}\n")
    else:
        line(f"  {'run':<17} {letter.run_id} (not on record)\n")
    line(f"  {'templates_digest':<17} {letter.templates_digest or '(not recorded)'}\n")
    line(f"  {'smtp reply':<17} {letter.server_reply or '(none)'}\n")
    line("  rule:\n")
    try:
        rule = json.dumps(json.loads(letter.rule), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        rule = letter.rule or "(not recorded)"
    for text in rule.splitlines():
        line(f"    {text}\n")

    line(f"\nEvents ({len(events)})\n")
    for event in events:
        reason = f"  {event.reason}" if event.reason else ""
        line(f"  #{event.seq:<6} {_local(event.at, zone)}  {event.status:<16} "
             f"by {event.actor}{reason}\n")  # fmt: skip

    if responses:
        line(f"\nResponses ({len(responses)})\n")
        for response in responses:
            line(f"  {_response_line(response, zone)}\n")

    line("\nMessage\n")
    if not letter.raw_message:
        line("  (no message recorded)\n")
        return
    message = _message(letter.raw_message)
    for name, value in message.items():
        line(f"  {name}: {' '.join(str(value).split())}\n")
    plain = (
        message.get_body(preferencelist=("plain",)) if isinstance(message, EmailMessage) else None
    )
    line("\n")
    if plain is not None:
        line(plain.get_content())
        if not plain.get_content().endswith("\n"):
            line("\n")
    else:
        line("  (no text/plain part)\n")
    others = [
        f"{part.get_content_type()} {part.get_filename() or ''}".strip()
        for part in message.walk()
        if not part.is_multipart() and part is not plain
    ]
    if others:
        line(f"\n  other parts: {', '.join(others)}\n")


def _write_raw(raw: str, out: TextIO) -> None:
    """The stored message, byte for byte (as_string's text, encoded as it was decoded)."""
    data = raw.encode("utf-8", "surrogateescape")
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(raw)
        return
    out.flush()
    buffer.write(data)
    buffer.flush()


# --- the command ------------------------------------------------------------------------------


def history_command(
    config: Config, args: argparse.Namespace, out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:  # fmt: skip
    """Run `cobranca history`: 0 when answered, 2 for bad arguments or an unknown letter."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.action == "show":
            if args.letter is None:
                raise HistoryUsage("history show needs a LETTER_ID")
            return _show(config, args, out)
        if args.letter is not None:
            raise HistoryUsage(f"unexpected LETTER_ID {args.letter} (did you mean history show?)")
        if args.raw:
            raise HistoryUsage("--raw goes with history show LETTER_ID")
        wanted = letter_filter(args)
        reader = HistoryReader(config)
        try:
            return _write_list(reader, wanted, args, config.zone, out)
        finally:
            reader.close()
    except HistoryUsage as exc:
        print(f"cobranca history: {exc}", file=err)
        return EXIT_USAGE


def _show(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    listing_options = (
        args.customer or args.layout or args.title or args.status or args.run
        or args.date_from or args.date_to or args.limit is not None or args.format != "table"
    )  # fmt: skip
    if listing_options:
        raise HistoryUsage("history show takes only LETTER_ID and --raw (filters are for list)")
    reader = HistoryReader(config)
    try:
        found = reader.one(args.letter)
    finally:
        reader.close()
    if found is None:
        raise HistoryUsage(f"no letter {args.letter} in the history")
    letter = found[0]
    if args.raw:
        if not letter.raw_message:
            raise HistoryUsage(
                f"letter {letter.id} has no recorded message (status {letter.status})"
            )
        _write_raw(letter.raw_message, out)
        return EXIT_OK
    _write_show(found, config.zone, out)
    return EXIT_OK
