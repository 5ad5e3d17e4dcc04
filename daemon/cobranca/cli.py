"""The `cobranca` command: a thin shell over the same functions the scheduler calls.

Exit codes: 0 success; 1 a run finished with failed letters or a layout that could not run;
2 the config, a template or the command line is wrong (nothing was sent).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy.exc import SQLAlchemyError

from . import __version__
from .arguments import add_ignore_calendar, iso_date
from .config import Config, ConfigError, find_config_path, load_config
from .history_view import add_history_parser, history_command
from .listing import add_titles_parser, titles_command
from .logs import configure as configure_logging
from .preview import add_preview_parser, preview_command
from .printing import add_print_parser, print_command
from .report import add_report_parser, report_command
from .responses import add_response_parser, response_command
from .runner import LetterStateError
from .send import add_send_parser, send_command
from .status import add_status_parser, status_command

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2

log = logging.getLogger("cobranca")


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """--config, --log-level and --log-format, taken before the command or after it.

    Only the top-level parser has defaults: a subcommand's own default would overwrite what
    was given before the command (`cobranca --config F check` read no config).
    """
    common = argparse.ArgumentParser(add_help=False)

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    common.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help="config file (default: $COBRANCA_CONFIG, /etc/cobranca/cobranca.yaml, "
        "./config/cobranca.yaml)",
    )
    common.add_argument(
        "--log-level",
        default=default("INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    common.add_argument(
        "--log-format",
        default=default("text"),
        choices=["text", "json"],
        help="text (with journald priorities under systemd) or JSON lines",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cobranca",
        description="Collection letters from TOTVS Protheus títulos.",
        parents=[_common_options(defaults=True)],
    )
    common = _common_options(defaults=False)
    parser.add_argument("--version", action="version", version=f"cobranca {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "check", parents=[common], help="validate the config and every template it names"
    )

    run = commands.add_parser(
        "run", parents=[common], help="run layouts once now (the scheduler's job)"
    )
    run.add_argument("layouts", nargs="*", metavar="LAYOUT", help="layouts to run (default: all)")
    run.add_argument("--as-of", type=iso_date, help="reference date YYYY-MM-DD (default: today)")
    run.add_argument(
        "--dry-run", action="store_true", help="render and report; send and record nothing"
    )
    run.add_argument("--format", choices=["text", "json"], default="text")
    add_ignore_calendar(run)

    commands.add_parser("daemon", parents=[common], help="run the scheduler until stopped")

    for name, what in (
        ("resend", "send an ambiguous letter again now"),
        ("mark-sent", "record that an ambiguous letter did arrive"),
    ):
        resolve = commands.add_parser(name, parents=[common], help=what)
        resolve.add_argument("letter", type=int, metavar="LETTER_ID")
        resolve.add_argument("--operator", default=None, help="who decides (default: $USER)")
        resolve.add_argument("--note", default="", help="why (e.g. 'customer confirmed')")
        if name == "resend":
            add_ignore_calendar(resolve)

    add_preview_parser(commands, [common])
    add_send_parser(commands, [common])
    add_titles_parser(commands, [common])
    add_print_parser(commands, [common])
    add_response_parser(commands, [common])
    add_report_parser(commands, [common])
    add_history_parser(commands, [common])
    add_status_parser(commands, [common])

    audit = commands.add_parser("audit", parents=[common], help="tamper evidence of the history")
    audit.add_argument(
        "action",
        choices=["verify", "head"],
        help="verify: check the hash chain and every letter; head: print the chain's last "
        "hash, to keep where the database's users cannot write",
    )

    purge = commands.add_parser(
        "purge", parents=[common], help="delete records past the retention period"
    )
    purge.add_argument("--before", type=iso_date, help="default: today − history.retention_days")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--operator", help="who purges (default: $USER)")

    letters = commands.add_parser("letters", parents=[common], help="list letters by status")
    letters.add_argument("--status", default="ambiguous")
    letters.add_argument("--layout")

    demo = commands.add_parser(
        "demo-db", parents=[common], help="write a Protheus-shaped demo database"
    )
    demo.add_argument("--url", help="SQLAlchemy URL (default: the config's source database)")
    demo.add_argument("--customers", type=int, default=40)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--as-of", type=iso_date, help="dates are relative to this day (default: today)"
    )
    demo.add_argument("--company", help="company code (default: the config's, else 01)")

    config = commands.add_parser("config", parents=[common], help="config file helpers")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser(
        "reference", parents=[common], help="print the config reference (Markdown)"
    )
    config_commands.add_parser(
        "generate", parents=[common], help="print a commented sample cobranca.yaml"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"cobranca: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except LetterStateError as exc:
        print(f"cobranca: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SQLAlchemyError as exc:
        from .runner import error_text

        print(f"cobranca: database error: {error_text(exc)}", file=sys.stderr)
        return EXIT_FAILURES


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        from .reference import config_reference, sample_config

        print(sample_config() if args.config_command == "generate" else config_reference(), end="")
        return EXIT_OK
    if args.command == "demo-db":
        return _demo_db(args)
    path = find_config_path(args.config)
    config = load_config(path)
    if args.command == "check":
        return _check(config)
    if args.command == "run":
        return _run(config, args)
    if args.command == "daemon":
        from .scheduler import serve

        return serve(path)
    if args.command in ("resend", "mark-sent"):
        return _resolve(config, args)
    if args.command == "letters":
        return _letters(config, args)
    if args.command == "purge":
        return _purge(config, args)
    if args.command == "audit":
        from .audit import audit_command
        from .history import HistoryStore

        history = HistoryStore(config.history.engine_url())
        try:
            return audit_command(history, args.action)
        finally:
            history.close()
    if args.command == "preview":
        return preview_command(config, args, _today(config))
    if args.command == "send":
        return send_command(config, args, _today(config))
    if args.command == "titles":
        return titles_command(config, args)
    if args.command == "print":
        return print_command(config, args)
    if args.command == "response":
        return response_command(config, args, _today(config))
    if args.command == "report":
        return report_command(config, args)
    if args.command == "history":
        return history_command(config, args)
    if args.command == "status":
        return status_command(config, datetime.now(config.zone))
    raise AssertionError(args.command)


def _today(config: Config) -> date:
    return datetime.now(config.zone).date()


def _check(config: Config) -> int:
    from .check import check_templates

    problems = check_templates(config, _today(config))
    if problems:
        print("cobranca: template errors:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{config.path}: OK ({len(config.layouts)} layouts, templates in {config.templates_dir})")
    return EXIT_OK


def _run(config: Config, args: argparse.Namespace) -> int:
    from .check import check_templates
    from .runner import run_layouts
    from .summary import format_json, format_text

    for name in args.layouts:
        config.layout(name)  # unknown names fail before anything runs
    problems = check_templates(config, _today(config))
    if problems:
        raise ConfigError(problems)
    stop = threading.Event()

    def on_stop(signum: int, frame: object) -> None:
        log.warning("received %s: finishing the letter in flight", signal.Signals(signum).name)
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_stop)
    try:
        report = run_layouts(
            config, args.layouts, as_of=args.as_of or _today(config), dry_run=args.dry_run,
            stop=stop, ignore_calendar=args.ignore_calendar,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_json(report) if args.format == "json" else format_text(report))
    return EXIT_OK if report.ok else EXIT_FAILURES


def _resolve(config: Config, args: argparse.Namespace) -> int:
    from .runner import resolve_letter

    operator = args.operator or getpass.getuser()
    result = resolve_letter(
        config, args.letter, resend=args.command == "resend", operator=operator, note=args.note,
        ignore_calendar=getattr(args, "ignore_calendar", False),
    )  # fmt: skip
    if args.command == "mark-sent":
        print(f"letter {args.letter} recorded as sent by {operator}")
        return EXIT_OK
    if result.sent:
        print(f"letter {args.letter} sent again")
        return EXIT_OK
    problems = result.failures.entries + result.ambiguities.entries
    why = result.error or "; ".join(r for _, r in problems)
    print(f"letter {args.letter} not sent: {why or 'see cobranca letters'}", file=sys.stderr)
    return EXIT_FAILURES


def _purge(config: Config, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from .history import HistoryStore

    before = args.before or _today(config) - timedelta(days=config.history.retention_days)
    if not args.yes:
        if not sys.stdin.isatty():
            print("cobranca: not on a terminal: confirm with --yes", file=sys.stderr)
            return EXIT_USAGE
        if input(f"delete history older than {before}? [s/N] ").strip().lower() not in (
            "s", "sim", "y", "yes",
        ):  # fmt: skip
            return EXIT_FAILURES
    cutoff = datetime.combine(before, datetime.min.time(), tzinfo=config.zone)
    history = HistoryStore(config.history.engine_url())
    try:
        counts = history.purge(cutoff, args.operator or getpass.getuser())
    finally:
        history.close()
    print(f"purged before {before}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return EXIT_OK


def _letters(config: Config, args: argparse.Namespace) -> int:
    from .history import HistoryStore
    from .models import LetterStatus

    try:
        status = LetterStatus(args.status)
    except ValueError:
        known = ", ".join(s.value for s in LetterStatus)
        raise ConfigError([f"unknown status {args.status!r}; one of: {known}"]) from None
    history = HistoryStore(config.history.engine_url())
    count = 0
    try:
        for r in history.letter_list(status, args.layout):
            print(f"{r.id:>8}  {r.as_of}  {r.layout:<24} {r.customer_code}/{r.customer_store:<4} "
                  f"{r.status:<16} {r.message_id}  {r.reason}")  # fmt: skip
            count += 1
    finally:
        history.close()
    print(f"{count} letter(s) {status.value}")
    return EXIT_OK


def _demo_db(args: argparse.Namespace) -> int:
    from .demo import write_demo_database

    if args.url is None:
        config = load_config(find_config_path(args.config))
        url = config.source.engine_url().render_as_string(hide_password=False)
        company = args.company or config.source.company
        schema = config.source.table_schema
        as_of = args.as_of or _today(config)
    else:
        url, company, schema = args.url, args.company or "01", None
        as_of = args.as_of or date.today()
    summary = write_demo_database(
        url, customers=args.customers, seed=args.seed, as_of=as_of, company=company, schema=schema
    )
    print(
        f"demo database written: {summary.url} "
        f"({summary.customers} customers, {summary.titles} títulos, as of {as_of.isoformat()})"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
