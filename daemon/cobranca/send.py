"""`cobranca send LAYOUT`: a letter now, for chosen customers or títulos, by the daemon's path.

It shows what would go and asks before sending (or `--yes`); cadence and the one-letter-a-day
rule apply as for the daemon, and `--force` overrides the cadence only, recorded with the
operator's name in the history.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import date

from .arguments import add_ignore_calendar, iso_date
from .config import Config
from .listing import add_filter_arguments, title_filter
from .models import Disposition, PlannedLetter
from .render import money
from .runner import LetterStateError, calendar_refusal, plan_by_hand, send_by_hand


def add_send_parser(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    send = commands.add_parser(
        "send", parents=parents, help="send a layout's letter now, by hand",
        description="Send LAYOUT's letter now for the títulos chosen with the same filters as "
        "`cobranca titles` (and selected by the layout today).",
    )  # fmt: skip
    send.add_argument("layout", metavar="LAYOUT")
    add_filter_arguments(send)
    send.add_argument("--as-of", type=iso_date, metavar="YYYY-MM-DD")
    send.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    send.add_argument(
        "--force", action="store_true", help="send even within the layout's cadence (recorded)"
    )
    send.add_argument("--operator", help="who is sending (default: $USER)")
    add_ignore_calendar(send)


def describe(letters: list[PlannedLetter], refused: list[tuple[str, str]]) -> str:
    lines = []
    for letter in letters:
        where = (
            ", ".join(letter.recipients)
            if letter.disposition is Disposition.SEND
            else f"PRINT ({letter.reason})"
        )
        lines.append(
            f"  {letter.customer.key:<10} {letter.customer.name[:40]:<40} "
            f"{len(letter.titles):>3} título(s) {money(letter.total):>16}  → {where}"
        )
    for who, why in refused:
        lines.append(f"  {who:<10} not sent: {why}")
    return "\n".join(lines)


def _progress() -> Callable[[int, int], None] | None:
    """A line every 25 letters on a terminal; silent in scripts and under systemd."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            print(f"  {done}/{total} letters", file=sys.stderr, flush=True)

    return show


def send_command(
    config: Config,
    args: argparse.Namespace,
    today: date,
    ask: Callable[[str], str] = input,
) -> int:
    layout = config.layout(args.layout)
    operator = args.operator or getpass.getuser()
    try:
        chosen = title_filter(args)
    except ValueError as exc:
        raise LetterStateError(str(exc)) from None
    policy = None if args.ignore_calendar else config.send_policy
    if refusal := calendar_refusal(config, policy):
        raise LetterStateError(refusal)  # before asking anyone to confirm anything
    letters, refused = plan_by_hand(config, layout, chosen, args.as_of or today, force=args.force)
    print(f"layout {layout.name}: {len(letters)} letter(s)")
    print(describe(letters, refused))
    if not letters:
        print("cobranca: nothing to send", file=sys.stderr)
        return 2
    if not args.yes:
        if not sys.stdin.isatty() and ask is input:
            print("cobranca: not on a terminal: confirm with --yes", file=sys.stderr)
            return 2
        if ask("send these letters? [s/N] ").strip().lower() not in ("s", "sim", "y", "yes"):
            print("nothing sent")
            return 1
    result = send_by_hand(
        config, layout, letters, operator=operator, progress=_progress(),
        ignore_calendar=args.ignore_calendar,
    )  # fmt: skip
    print(
        f"sent {result.sent}, to print {result.print_needed}, failed {result.failed}, "
        f"ambiguous {result.ambiguous}, already recorded today {result.skipped['already_claimed']}"
    )
    for who, why in result.failures.entries + result.ambiguities.entries:
        print(f"  {who}: {why}", file=sys.stderr)
    if result.error:
        print(f"cobranca: {result.error}", file=sys.stderr)
    return 0 if result.ok else 1
