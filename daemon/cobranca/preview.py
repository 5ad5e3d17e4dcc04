"""`cobranca preview LAYOUT --customer CODE[/STORE]`: the exact letter a customer would get today.

Same source, plan and templates as the daemon; nothing is sent or recorded. Cadence is ignored
on purpose: a preview answers "what would it say", not "is it due".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path

from .arguments import iso_date
from .config import Config
from .mail import build_message, new_message_id
from .models import PlannedLetter
from .plan import plan_letter
from .render import ComposedLetter, compose, load_templates, make_environment
from .runner import LetterStateError
from .source import ProtheusSource


def add_preview_parser(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    preview = commands.add_parser(
        "preview", parents=parents, help="show the letter a customer would get today"
    )
    preview.add_argument("layout", metavar="LAYOUT")
    preview.add_argument("--customer", required=True, metavar="CODE[/STORE]")
    preview.add_argument("--as-of", type=iso_date, metavar="YYYY-MM-DD")
    preview.add_argument("--format", choices=["text", "html", "eml", "pdf"], default="text")
    preview.add_argument(
        "--open", action="store_true", help="write the HTML (or PDF) to a file and print its path"
    )


def preview_letter(
    config: Config, layout_name: str, customer: str, as_of: date, message_id: str
) -> tuple[PlannedLetter, ComposedLetter]:
    layout = config.layout(layout_name)
    source = ProtheusSource(config.source)
    try:
        groups = list(source.customers_titles(layout.selection, as_of, customers=[customer]))
    finally:
        source.close()
    if not groups:
        raise LetterStateError(
            f"customer {customer} has no open título that layout {layout_name} selects on "
            f"{as_of.isoformat()}"
        )
    if len(groups) > 1:
        stores = ", ".join(g.customer.key for g in groups)
        raise LetterStateError(f"customer {customer} has several stores ({stores}): name one")
    letter = plan_letter(groups[0], layout, as_of, None)
    templates = load_templates(
        make_environment(config.templates_dir), layout.template, layout.subject
    )
    return letter, compose(templates, letter, layout, config.creditor, message_id)


def preview_command(config: Config, args: argparse.Namespace, today: date) -> int:
    from datetime import datetime

    as_of = args.as_of or today
    message_id = new_message_id(config.delivery)
    letter, composed = preview_letter(config, args.layout, args.customer, as_of, message_id)
    rendered = composed.rendered
    for key, problem in composed.problems:
        print(f"warning: {key or letter.customer.key}: {problem}", file=sys.stderr)
    if args.format == "pdf":
        from .pdf import render_pdf_one

        content: bytes | str = render_pdf_one(letter, config)
    elif args.format == "eml":
        message = build_message(
            rendered, letter.recipients or ("sem-email@invalid",), config.delivery,
            message_id, datetime.now(config.zone), args.layout, (), composed.images,
        )  # fmt: skip
        content = message.data
    elif args.format == "html":
        content = rendered.html
    else:
        to = ", ".join(letter.recipients) or f"(no usable e-mail: {letter.reason})"
        content = f"To: {to}\nSubject: {rendered.subject}\n\n{rendered.text}"
    if args.open or args.format == "pdf":
        suffix = {"pdf": ".pdf", "eml": ".eml", "text": ".txt"}.get(args.format, ".html")
        with tempfile.NamedTemporaryFile(
            "wb", prefix=f"cobranca-{args.layout}-", suffix=suffix, delete=False
        ) as handle:
            handle.write(content.encode() if isinstance(content, str) else content)
        print(Path(handle.name))
        return 0
    if isinstance(content, bytes):
        sys.stdout.buffer.write(content)
    else:
        print(content, end="" if content.endswith("\n") else "\n")
    return 0
