"""`cobranca print LAYOUT`: the letters that must go on paper, as PDF, recorded as printed.

By default it prints the layout's letters the history says need paper (``print_needed``, and
``failed_permanent`` letters whose e-mail bounced for good), whatever their as-of date. Each is
re-read from the ERP first, as the daemon does before sending: paid títulos drop out, and a
letter left with nothing to collect is not printed (it is recorded as skipped, with why).
``--customer`` prints chosen customers (their letter awaiting print if they have one, else a
new letter recorded as made by hand), ``--all-selected`` everyone the layout selects on the day.
The PDF file(s) are written first; only then is each letter recorded as printed, by whom and
into which file.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import islice
from pathlib import Path

from .arguments import iso_date
from .config import Config, ConfigError, Layout
from .history import HistoryStore, LetterRecord
from .mail import new_message_id
from .models import Disposition, LetterStatus, PlannedLetter
from .pdf import PdfError, PdfRenderer
from .plan import SKIP_REASONS, cadence_window_start, plan_letter
from .render import TemplateProblem, money
from .runner import LetterStateError, plan_by_hand
from .source import ProtheusSource, SourceError, TitleFilter

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
PROGRESS_EVERY = 50
TRANSPORT = "print"
_CUSTOMER = re.compile(r"[^/\s]+(/[^/\s]+)?")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def add_print_parser(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    printing = commands.add_parser(
        "print",
        parents=parents,
        help="write the letters that need paper as PDF and record them as printed",
        description="Write a layout's letters that need paper (no usable e-mail, or an "
        "e-mail refused for good) as one PDF, re-reading their títulos from the ERP, and "
        "record each as printed.",
    )
    printing.add_argument("layout", metavar="LAYOUT")
    who = printing.add_mutually_exclusive_group()
    who.add_argument(
        "--customer",
        action="append",
        default=[],
        metavar="CODE[/STORE]",
        help="print these customers' letters (their letter awaiting print, else a new one "
        "recorded as made by hand); repeatable",
    )
    who.add_argument(
        "--all-selected",
        action="store_true",
        help="print for every customer the layout selects on the day, not only the letters "
        "awaiting print",
    )
    printing.add_argument(
        "--as-of",
        type=iso_date,
        metavar="YYYY-MM-DD",
        help="reference date of new letters (default: today); without --customer or "
        "--all-selected, print only the letters awaiting print of that date",
    )
    where = printing.add_mutually_exclusive_group()
    where.add_argument(
        "--output",
        metavar="PATH",
        help="the PDF file (default: cartas-LAYOUT-YYYY-MM-DD.pdf in the current folder)",
    )
    where.add_argument(
        "--split",
        metavar="DIR",
        help="one PDF per customer in this folder, named LAYOUT-CODE-STORE.pdf",
    )
    printing.add_argument("--operator", help="who is printing (default: $USER)")
    printing.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be printed; write nothing, record nothing",
    )


@dataclass(frozen=True)
class PrintJob:
    """One letter to print: a recorded letter awaiting paper, or (letter_id None) a new one."""

    letter: PlannedLetter
    letter_id: int | None = None


@dataclass
class PrintSelection:
    jobs: list[PrintJob] = field(default_factory=list)
    # Letters awaiting print with nothing left to collect: (customer, why, letter id).
    dropped: list[tuple[str, str, int]] = field(default_factory=list)
    # Customers who get no letter: (customer, why).
    skipped: list[tuple[str, str]] = field(default_factory=list)


def print_command(config: Config, args: argparse.Namespace) -> int:
    """The `print` subcommand. 0: printed; 1: printed, but something needs a look; 2: nothing."""
    try:
        layout = config.layout(args.layout)
    except ConfigError as exc:
        return _usage(str(exc))
    bad = [c for c in args.customer if not _CUSTOMER.fullmatch(c)]
    if bad:
        return _usage(f"not CODE or CODE/STORE: {', '.join(bad)}")
    operator = args.operator or getpass.getuser()
    today = datetime.now(config.zone).date()
    try:
        source = ProtheusSource(config.source)
    except SourceError as exc:
        print(f"cobranca: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    history = HistoryStore(config.history.engine_url())
    try:
        try:
            if args.customer:
                selection = select_customers(
                    config, layout, source, history, args.customer, args.as_of or today
                )
            elif args.all_selected:
                selection = select_all(layout, source, history, args.as_of or today)
            else:
                selection = select_awaiting(layout, source, history, args.as_of)
        except (LetterStateError, SourceError) as exc:
            return _usage(str(exc))
        return _print(config, layout, history, selection, args, operator, today)
    finally:
        source.close()
        history.close()


# --- choosing the letters -------------------------------------------------------------------


def awaiting_print(
    history: HistoryStore, layout: str, as_of: date | None = None
) -> list[LetterRecord]:
    """The layout's letters that need paper, by customer then date."""
    records = history.letters(layout=layout, status=LetterStatus.PRINT_NEEDED, as_of=as_of) + [
        r
        for r in history.letters(layout=layout, status=LetterStatus.FAILED_PERMANENT, as_of=as_of)
        if r.needs_print
    ]
    return sorted(records, key=lambda r: (r.customer_code, r.customer_store, r.as_of, r.id))


def reread_record(
    source: ProtheusSource, layout: Layout, record: LetterRecord
) -> tuple[PlannedLetter | None, str]:
    """A recorded letter as it stands in the ERP now; None and why when nothing is left."""
    recnos = [t.recno for t in record.titles if t.recno]
    if not recnos:
        # An empty list would not narrow the read at all: never let it pick other títulos.
        return None, "the letter has no títulos recorded"
    group = source.reread(layout.selection, record.as_of, recnos)
    if not group.titles:
        return None, "every título was paid or written off since the letter was planned"
    if (group.customer.code, group.customer.store) != (record.customer_code, record.customer_store):
        return None, f"its títulos now belong to customer {group.customer.key}"
    letter = plan_letter(group, layout, record.as_of, None)
    if letter.disposition is Disposition.SKIP:
        return None, SKIP_REASONS.get(letter.reason, letter.reason)
    return letter, ""


def select_awaiting(
    layout: Layout,
    source: ProtheusSource,
    history: HistoryStore,
    as_of: date | None,
    records: Sequence[LetterRecord] | None = None,
) -> PrintSelection:
    """The default: every letter of the layout awaiting print (of one date with --as-of)."""
    selection = PrintSelection()
    for record in awaiting_print(history, layout.name, as_of) if records is None else records:
        letter, why = reread_record(source, layout, record)
        if letter is None:
            selection.dropped.append((_key(record), why, record.id))
        else:
            selection.jobs.append(PrintJob(letter, record.id))
    return selection


def select_customers(
    config: Config,
    layout: Layout,
    source: ProtheusSource,
    history: HistoryStore,
    customers: Sequence[str],
    as_of: date,
) -> PrintSelection:
    """Chosen customers: their letters awaiting print, else a new letter each (cadence aside).

    A customer who cannot get one (unknown, nothing open, already has the day's letter of this
    layout) makes the whole command refuse: LetterStateError lists them all.
    """
    pending = awaiting_print(history, layout.name)
    mine = [r for r in pending if any(_matches(spec, r) for spec in customers)]
    selection = select_awaiting(layout, source, history, None, records=mine)
    rest = tuple(spec for spec in customers if not any(_matches(spec, r) for r in mine))
    if rest:
        letters, refused = plan_by_hand(
            config, layout, TitleFilter(customers=rest), as_of, force=True
        )
        if refused:
            raise LetterStateError(
                "; ".join(f"customer {who}: {why}" for who, why in refused)
                + " (nothing was printed)"
            )
        selection.jobs.extend(PrintJob(letter) for letter in letters)
    return selection


def select_all(
    layout: Layout, source: ProtheusSource, history: HistoryStore, as_of: date
) -> PrintSelection:
    """Everyone the layout selects on the day, as the daemon would plan them (cadence too)."""
    selection = PrintSelection()
    pending: dict[tuple[str, str], list[LetterRecord]] = {}
    for record in awaiting_print(history, layout.name):
        pending.setdefault((record.customer_code, record.customer_store), []).append(record)
    last = history.last_letters(layout.name, cadence_window_start(layout, as_of), before=as_of)
    of_the_day = history.letters_of_day(layout.name, as_of)
    for group in source.customers_titles(layout.selection, as_of):
        key = (group.customer.code, group.customer.store)
        if key in pending:
            found = select_awaiting(layout, source, history, None, records=pending[key])
            selection.jobs.extend(found.jobs)
            selection.dropped.extend(found.dropped)
        elif key in of_the_day:
            selection.skipped.append((group.customer.key, "already has this layout's letter "
                                      f"for {as_of.isoformat()}"))  # fmt: skip
        else:
            letter = plan_letter(group, layout, as_of, last.get(key))
            if letter.disposition is Disposition.SKIP:
                reason = SKIP_REASONS.get(letter.reason, letter.reason)
                selection.skipped.append((group.customer.key, reason))
            else:
                selection.jobs.append(PrintJob(letter))
    return selection


# --- printing and recording -----------------------------------------------------------------


def _print(
    config: Config,
    layout: Layout,
    history: HistoryStore,
    selection: PrintSelection,
    args: argparse.Namespace,
    operator: str,
    today: date,
) -> int:
    jobs = sorted(selection.jobs, key=_order)
    for who, why, letter_id in selection.dropped:
        done = "" if args.dry_run else "; recorded as skipped"
        print(f"  {who:<10} not printed (letter {letter_id}): {why}{done}")
    for who, why in selection.skipped:
        print(f"  {who:<10} not printed: {why}")
    if not args.dry_run:
        for _, why, letter_id in selection.dropped:
            history.resolve(
                letter_id, LetterStatus.SKIPPED, f"not printed: {why}", operator,
                (LetterStatus.PRINT_NEEDED, LetterStatus.FAILED_PERMANENT),
            )  # fmt: skip
    if not jobs:
        return _usage(f"nothing to print for layout {layout.name}")

    renderer = PdfRenderer(config)
    progress = _progress(len(jobs))
    try:
        files = _render(renderer, layout, jobs, args, progress, today)
    except TemplateProblem as exc:
        return _usage(f"template problem, nothing printed: {exc}")
    except PdfError as exc:
        print(f"cobranca: {exc} (nothing printed)", file=sys.stderr)
        return EXIT_FAILURES
    except OSError as exc:
        # A failed rename names the final file second (the temporary file first).
        where = exc.filename2 or exc.filename or args.output or args.split
        print(f"cobranca: cannot write {where}: {exc.strerror} (nothing recorded as printed)",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILURES

    verb = "would print" if args.dry_run else "printed"
    for _, part, _ in files:
        for job in part:
            letter = job.letter
            origin = f"letter {job.letter_id}" if job.letter_id is not None else "new letter"
            print(f"  {letter.customer.key:<10} {letter.customer.name[:40]:<40} "
                  f"{len(letter.titles):>3} título(s) {money(letter.total):>16}  "
                  f"{letter.as_of.isoformat()}  ({origin})")  # fmt: skip
    pages = sum(n for _, _, n in files)
    where = str(files[0][0]) if len(files) == 1 else f"{len(files)} files in {files[0][0].parent}"
    print(f"layout {layout.name}: {verb} {len(jobs)} letter(s), {pages} page(s), into {where}")
    if args.dry_run:
        print("dry run: no file written, nothing recorded")
        return EXIT_OK
    problems = _record(config, layout, history, files, operator)
    for problem in problems:
        print(f"cobranca: {problem}", file=sys.stderr)
    return EXIT_FAILURES if problems else EXIT_OK


def _render(
    renderer: PdfRenderer,
    layout: Layout,
    jobs: list[PrintJob],
    args: argparse.Namespace,
    progress: Callable[[int], None] | None,
    today: date,
) -> list[tuple[Path, list[PrintJob], int]]:
    """Render each file as it goes, then give them all their names: (path, its letters, pages).

    A file is written under a temporary name beside its own; only when every file is
    complete are they synced and renamed, so a failure leaves no file behind, and never half
    a PDF under a final name. A dry run writes nothing.
    """
    parts: list[tuple[Path, list[PrintJob]]]
    if args.split:
        folder = Path(args.split)
        by_customer: dict[str, list[PrintJob]] = {}
        for job in jobs:
            by_customer.setdefault(job.letter.customer.key, []).append(job)
        parts = [(folder / _split_name(layout.name, part[0].letter), part)
                 for part in by_customer.values()]  # fmt: skip
    else:
        output = Path(args.output) if args.output else _default_output(layout, args.as_of or today)
        parts = [(output, jobs)]
    files: list[tuple[Path, list[PrintJob], int]] = []
    written: list[tuple[Path, Path]] = []  # (temporary, final)
    letters = [job.letter for _, part in parts for job in part]
    try:
        # One stream of PDFs for all the files: with --split, one letter per file still
        # keeps every CPU busy.
        with closing(renderer.pdfs(letters, progress)) as rendered:
            for path, part in parts:
                final = path.resolve()
                mine = islice(rendered, len(part))
                if args.dry_run:
                    with open(os.devnull, "wb") as nowhere:
                        pages = renderer.join(mine, nowhere)
                else:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp",
                                                dir=final.parent)  # fmt: skip
                    written.append((Path(name), final))
                    with os.fdopen(fd, "wb") as handle:
                        pages = renderer.join(mine, handle)
                        handle.flush()
                        os.fsync(handle.fileno())
                files.append((final, part, pages))
        for temporary, final in written:
            os.chmod(temporary, 0o640)
            os.replace(temporary, final)
    except BaseException:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise
    return files


def _record(
    config: Config,
    layout: Layout,
    history: HistoryStore,
    files: list[tuple[Path, list[PrintJob], int]],
    operator: str,
) -> list[str]:
    """Each printed letter recorded as printed; what could not be, as messages."""
    problems: list[str] = []
    run_id: int | None = None
    for path, part, _ in files:
        for job in part:
            who = job.letter.customer.key
            if job.letter_id is not None:
                if not history.mark_printed(job.letter_id, operator, str(path)):
                    problems.append(f"customer {who}: letter {job.letter_id} was no longer "
                                    "awaiting print (printed or changed meanwhile); not recorded "
                                    "again")  # fmt: skip
                continue
            if run_id is None:
                run_id = history.start_run(layout.name, job.letter.as_of, TRANSPORT,
                                           config.digest)  # fmt: skip
            recorded = history.record_manual(
                run_id, job.letter, status=LetterStatus.PRINTED, operator=operator,
                message_id=new_message_id(config.delivery), transport=TRANSPORT,
                reason=f"printed by {operator} into {path}",
            )  # fmt: skip
            if not recorded.recorded:
                problems.append(f"customer {who}: a letter of layout {layout.name} for "
                                f"{job.letter.as_of.isoformat()} was recorded meanwhile; this "
                                "printed one is not in the history")  # fmt: skip
    if run_id is not None:
        history.finish_run(run_id, status="finished", counts={}, skip_reasons={})
    return problems


# --- helpers --------------------------------------------------------------------------------


def _usage(message: str) -> int:
    print(f"cobranca: {message}", file=sys.stderr)
    return EXIT_USAGE


def _order(job: PrintJob) -> tuple[str, str, date]:
    return (job.letter.customer.code, job.letter.customer.store, job.letter.as_of)


def _key(record: LetterRecord) -> str:
    return f"{record.customer_code}/{record.customer_store}"


def _matches(spec: str, record: LetterRecord) -> bool:
    code, _, store = spec.partition("/")
    return record.customer_code == code and (not store or record.customer_store == store)


def _progress(total: int) -> Callable[[int], None] | None:
    """One line per PROGRESS_EVERY letters, only for a person watching a terminal."""
    if total < PROGRESS_EVERY or not sys.stderr.isatty():
        return None

    def report(done: int) -> None:
        if done % PROGRESS_EVERY == 0 or done == total:
            print(f"  {done}/{total} letters rendered", file=sys.stderr, flush=True)

    return report


def _default_output(layout: Layout, day: date) -> Path:
    """cartas-LAYOUT-YYYY-MM-DD.pdf in the current folder; -2, -3... rather than overwrite."""
    base = f"cartas-{layout.name}-{day.isoformat()}"
    path = Path(f"{base}.pdf")
    n = 2
    while path.exists():
        path = Path(f"{base}-{n}.pdf")
        n += 1
    return path


def _split_name(layout: str, letter: PlannedLetter) -> str:
    parts = (layout, letter.customer.code, letter.customer.store)
    return "-".join(_UNSAFE_IN_NAME.sub("_", p) or "_" for p in parts) + ".pdf"
