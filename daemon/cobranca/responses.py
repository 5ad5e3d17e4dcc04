"""`cobranca response add|close|list`: what the customer did, so letters stop or resume.

A promise to pay holds the títulos it covers until its date plus `responses.promise_grace_days`;
past that, if still unpaid, it is *broken* and the ladder resumes. A dispute or a claim of
payment holds its títulos until closed. A request for a new boleto or a phone contact is only
recorded. Every response, and its closing, is an event in the audit chain.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import date, timedelta

from .arguments import amount, iso_date
from .config import Config
from .history import RESPONSE_KINDS, HistoryStore, ResponseRecord
from .render import money
from .runner import LetterStateError
from .source import ProtheusSource, TitleFilter


def add_response_parser(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    response = commands.add_parser(
        "response", parents=parents, help="record, close and list customers' responses"
    )
    actions = response.add_subparsers(dest="response_action", required=True)
    add = actions.add_parser("add", parents=parents, help="record a customer's response")
    add.add_argument("--customer", required=True, metavar="CODE/STORE")
    add.add_argument("--kind", required=True, choices=RESPONSE_KINDS)
    add.add_argument("--title", metavar="KEY", help="the título it covers (default: all)")
    add.add_argument("--letter", type=int, metavar="LETTER_ID", help="the letter it answers")
    add.add_argument("--amount", type=amount, help="promised amount")
    add.add_argument("--date", type=iso_date, help="promised payment date")
    add.add_argument("--note", default="", help="dispute reason, phone note...")
    add.add_argument("--proof", default="", help="payment proof reference")
    add.add_argument("--operator", help="who records it (default: $USER)")
    close = actions.add_parser("close", parents=parents, help="close a dispute or promise")
    close.add_argument("response", type=int, metavar="RESPONSE_ID")
    close.add_argument("--note", default="")
    close.add_argument("--operator")
    listing = actions.add_parser("list", parents=parents, help="list responses")
    listing.add_argument("--customer", metavar="CODE[/STORE]")
    listing.add_argument("--kind", choices=RESPONSE_KINDS)
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--open", action="store_true", help="only open ones")
    state.add_argument("--closed", action="store_true", help="only closed ones")
    state.add_argument("--broken", action="store_true", help="promises past due and unpaid")
    listing.add_argument("--as-of", type=iso_date, help="reference date (default today)")


def response_command(config: Config, args: argparse.Namespace, today: date) -> int:
    history = HistoryStore(config.history.engine_url())
    try:
        if args.response_action == "add":
            return _add(config, history, args)
        if args.response_action == "close":
            closed = history.close_response(
                args.response, args.operator or getpass.getuser(), args.note
            )
            if closed is None:
                raise LetterStateError(f"response {args.response} does not exist or is closed")
            print(f"response {closed.id} closed")
            return 0
        return _list(config, history, args, today)
    finally:
        history.close()


def _add(config: Config, history: HistoryStore, args: argparse.Namespace) -> int:
    code, _, store = args.customer.partition("/")
    if not store:
        raise LetterStateError("--customer needs CODE/STORE (a response is for one store)")
    if args.kind == "promise" and (args.date is None or args.amount is None):
        raise LetterStateError("a promise needs --date and --amount")
    if args.kind == "dispute" and not args.note:
        raise LetterStateError("a dispute needs --note with its reason")
    if args.title and args.title.split("|")[5:7] != [code, store]:
        raise LetterStateError(f"título {args.title} is not customer {args.customer}'s")
    response_id = history.add_response(
        ResponseRecord(
            customer_code=code, customer_store=store, title_key=args.title or None,
            letter_id=args.letter, kind=args.kind, amount=args.amount,
            promised_date=args.date, note=args.note, proof=args.proof,
            operator=args.operator or getpass.getuser(),
        )
    )  # fmt: skip
    print(f"response {response_id} recorded ({args.kind}, customer {args.customer})")
    return 0


def broken(config: Config, responses: list[ResponseRecord], today: date) -> list[ResponseRecord]:
    """Open promises past their date plus grace whose títulos are still open in the ERP."""
    grace = timedelta(days=config.responses.promise_grace_days)
    late = [
        r for r in responses
        if r.kind == "promise" and r.closed_at is None and r.promised_date is not None
        and today > r.promised_date + grace
    ]  # fmt: skip
    if not late:
        return []
    source = ProtheusSource(config.source)
    try:
        return [r for r in late if _still_open(source, r, today)]
    finally:
        source.close()


def _still_open(source: ProtheusSource, response: ResponseRecord, today: date) -> bool:
    chosen = TitleFilter(
        customers=(f"{response.customer_code}/{response.customer_store}",),
        title_keys=(response.title_key,) if response.title_key else (),
    )
    return any(group.titles for group in source.open_titles(chosen, today))


def _list(config: Config, history: HistoryStore, args: argparse.Namespace, today: date) -> int:
    open_only = True if (args.open or args.broken) else (False if args.closed else None)
    records = history.responses(customer=args.customer, kind=args.kind, open_only=open_only)
    if args.broken:
        records = broken(config, records, args.as_of or today)
    for r in records:
        state = "open" if r.closed_at is None else f"closed by {r.closed_by}"
        what = r.title_key or "all títulos"
        extra = ""
        if r.kind == "promise" and r.promised_date:
            extra = f" {money(r.amount)} by {r.promised_date.strftime('%d/%m/%Y')}"
        print(f"{r.id:>6}  {r.customer_code}/{r.customer_store:<4} {r.kind:<13} {what:<40}"
              f"{extra}  [{state}] {r.operator}: {r.note}")  # fmt: skip
    label = "broken promise(s)" if args.broken else "response(s)"
    print(f"{len(records)} {label}")
    return 0
