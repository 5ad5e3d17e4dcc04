"""Each stage of a run timed beside its bare limit, in the same process, on the same data.

* source + plan: `customers_titles` + `plan_letter` over every selected row, against iterating
  the very same compiled statement (same rows, same columns, same fetch size) with SQLAlchemy
  Core and doing nothing with the rows.
* render: `render.compose` per letter against a plain `jinja2.Environment` rendering the same
  templates (subject, HTML, text) with the same filters and a pre-built context: the
  `letter_context` of that letter.
* delivery: our transport's `send` (and `flush` per batch) over one connection against raw
  `smtplib.SMTP.sendmail` over one connection (SMTP), or against writing each message's bytes
  to a file (outbox), on the same pre-built messages.

Ours and bare alternate `repeat` times; the best time of each counts.
"""

from __future__ import annotations

import itertools
import os
import smtplib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2

from cobranca.config import Config, Layout
from cobranca.mail import OutgoingMessage, build_message, new_message_id
from cobranca.models import Disposition, PlannedLetter
from cobranca.payment import letter_payment
from cobranca.pix import qr_png
from cobranca.plan import plan_letter
from cobranca.render import (
    FILTERS,
    ComposedLetter,
    compose,
    letter_context,
    load_templates,
    make_environment,
    template_names,
)
from cobranca.source import ProtheusSource
from cobranca.transports import open_transport
from cobranca.transports.outbox import OutboxTransport


@dataclass
class Comparison:
    """One stage: our time and the bare limit's on the same work."""

    stage: str
    items: int
    unit: str
    ours_s: float
    bare_s: float
    ours_runs: list[float] = field(default_factory=list)
    bare_runs: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours_s / self.bare_s if self.bare_s else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "items": self.items,
            "unit": self.unit,
            "ours_s": self.ours_s,
            "bare_s": self.bare_s,
            "ratio": self.ratio,
            "ours_runs": self.ours_runs,
            "bare_runs": self.bare_runs,
            **self.detail,
        }


def _timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


def _alternate(
    ours: Callable[[], Any], bare: Callable[[], Any], repeat: int, between: Callable[[], None]
) -> tuple[list[float], list[float], Any, Any]:
    ours_runs: list[float] = []
    bare_runs: list[float] = []
    ours_value = bare_value = None
    for _ in range(repeat):
        between()
        seconds, bare_value = _timed(bare)
        bare_runs.append(seconds)
        between()
        seconds, ours_value = _timed(ours)
        ours_runs.append(seconds)
    return ours_runs, bare_runs, ours_value, bare_value


def _nothing() -> None:
    return None


# --- source + plan ------------------------------------------------------------------------------


@dataclass
class PlanOutcome:
    rows: int
    customers: int
    dispositions: Counter[str]
    sample: list[PlannedLetter]


def source_plan(
    config: Config, layout: Layout, as_of: date, *, repeat: int, sample_size: int
) -> tuple[Comparison, PlanOutcome]:
    source = ProtheusSource(config.source)
    try:
        statement = source.statement(layout.selection, as_of)
        fetch_size = config.source.fetch_size

        def bare() -> int:
            rows = 0
            with source.engine.connect() as connection:
                result = connection.execution_options(
                    stream_results=True, yield_per=fetch_size
                ).execute(statement)
                for _row in result:
                    rows += 1
            return rows

        def ours() -> PlanOutcome:
            dispositions: Counter[str] = Counter()
            sample: list[PlannedLetter] = []
            rows = customers = 0
            for group in source.customers_titles(layout.selection, as_of):
                letter = plan_letter(group, layout, as_of, None, ())
                customers += 1
                rows += len(group.titles) + len(group.rejected)
                dispositions[letter.disposition.value] += 1
                if letter.disposition is Disposition.SEND and len(sample) < sample_size:
                    sample.append(letter)
            return PlanOutcome(rows, customers, dispositions, sample)

        warm_s, _ = _timed(bare)  # the first read fills the database's cache: not counted
        ours_runs, bare_runs, outcome, bare_rows = _alternate(ours, bare, repeat, _nothing)
    finally:
        source.close()
    comparison = Comparison(
        "source + plan",
        bare_rows,
        "rows",
        min(ours_runs),
        min(bare_runs),
        ours_runs,
        bare_runs,
        {
            "cold_bare_s": warm_s,
            "customers": outcome.customers,
            "dispositions": dict(outcome.dispositions),
            "fetch_size": fetch_size,
        },
    )
    return comparison, outcome


# --- render -------------------------------------------------------------------------------------


def _bare_environment(templates_dir: Path) -> jinja2.Environment:
    """The same loader, escaping and whitespace options and filters, without our sandbox.

    Templates are not checked for changes on each import (auto_reload off, as in ours): the
    bare limit must not pay for a stat per ``{% import %}`` that ours skips.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=False
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(FILTERS)
    return env


def render(
    config: Config, layout: Layout, letters: Sequence[PlannedLetter], *, repeat: int
) -> tuple[Comparison, list[ComposedLetter], list[str]]:
    templates = load_templates(
        make_environment(config.templates_dir), layout.template, layout.subject
    )
    creditor = config.creditor
    ids = [new_message_id(config.delivery) for _ in letters]

    def ours() -> list[ComposedLetter]:
        return [
            compose(templates, letter, layout, creditor, message_id)
            for letter, message_id in zip(letters, ids, strict=True)
        ]

    composed = ours()  # also compiles every template once: not counted
    creditor_data = creditor.model_dump()
    contexts = [
        letter_context(letter, creditor_data, c.payment, c.images[0].src if c.images else "")
        for letter, c in zip(letters, composed, strict=True)
    ]
    env = _bare_environment(config.templates_dir)
    html_name, text_name = template_names(layout.template)
    subject_t = env.from_string(layout.subject)
    html_t, text_t = env.get_template(html_name), env.get_template(text_name)

    def bare() -> int:
        size = 0
        for context in contexts:
            subject = subject_t.render(context)
            size += len(html_t.render(context, subject=subject))
            size += len(text_t.render(context, subject=subject))
        return size

    ours_runs, bare_runs, composed, _ = _alternate(ours, bare, repeat, _nothing)

    # Where compose's time goes (each part alone, same letters): informative, not a target.
    payments_s, payments = _timed(
        lambda: [letter_payment(letter, layout, creditor) for letter in letters]
    )
    pix_payloads = [p.pix.payload for p in payments if p.pix]
    qr_s, _ = _timed(lambda: [qr_png(payload) for payload in pix_payloads])
    context_s, _ = _timed(
        lambda: [
            letter_context(
                letter, creditor.model_dump(), c.payment, c.images[0].src if c.images else ""
            )
            for letter, c in zip(letters, composed, strict=True)
        ]
    )
    sandbox_s, _ = _timed(lambda: [templates.render(context) for context in contexts])
    comparison = Comparison(
        "render",
        len(letters),
        "letters",
        min(ours_runs),
        min(bare_runs),
        ours_runs,
        bare_runs,
        {
            "breakdown_s": {
                "letter_payment": payments_s,
                "of_which_qr_png": qr_s,
                "letter_context": context_s,
                "sandboxed_render": sandbox_s,
            },
            "titles": sum(len(letter.titles) for letter in letters),
            "with_pix": len(pix_payloads),
        },
    )
    return comparison, composed, ids


# --- delivery -----------------------------------------------------------------------------------


def build_messages(
    config: Config,
    layout: Layout,
    letters: Sequence[PlannedLetter],
    composed: Sequence[ComposedLetter],
    ids: Sequence[str],
) -> tuple[float, list[OutgoingMessage]]:
    now = datetime.now(config.zone)

    def build() -> list[OutgoingMessage]:
        return [
            build_message(
                c.rendered, letter.recipients, config.delivery, message_id, now, layout.name,
                (), c.images,
            )
            for letter, c, message_id in zip(letters, composed, ids, strict=True)
        ]  # fmt: skip

    return _timed(build)


def delivery_outbox(
    config: Config, messages: Sequence[OutgoingMessage], *, repeat: int
) -> Comparison:
    """Our OutboxTransport (temporary file, fsync, rename) against writing the bytes.

    Each try writes into a folder of its own, left for the bench to delete when it ends:
    deleting the last try's files would slow this one's (see run.set_aside).
    """
    outbox = config.delivery.outbox
    tries = itertools.count(1)

    def fresh(kind: str) -> Path:
        folder = outbox.directory.with_name(f"{outbox.directory.name}-{kind}-{next(tries)}")
        folder.mkdir(parents=True)
        return folder

    def ours() -> int:
        with OutboxTransport(fresh("ours"), outbox.batch_size) as transport:
            for number, message in enumerate(messages, 1):
                transport.send(message)
                if number % transport.batch_size == 0:
                    transport.flush()
            transport.flush()
        return len(messages)

    def bare() -> int:
        folder = fresh("bare")
        for number, message in enumerate(messages):
            (folder / f"{number}.eml").write_bytes(message.data)
        return len(messages)

    fsync_folder = fresh("fsync")

    def bare_fsync() -> int:
        for number, message in enumerate(messages):
            with open(fsync_folder / f"{number}.eml", "wb") as handle:
                handle.write(message.data)
                handle.flush()
                os.fsync(handle.fileno())
        return len(messages)

    ours_runs, bare_runs, _, _ = _alternate(ours, bare, repeat, os.sync)
    os.sync()
    fsync_s, _ = _timed(bare_fsync)
    size = sum(p.stat().st_size for p in fsync_folder.iterdir())
    return Comparison(
        "delivery outbox",
        len(messages),
        "messages",
        min(ours_runs),
        min(bare_runs),
        ours_runs,
        bare_runs,
        {
            "bare_write_fsync_s": fsync_s,
            "ratio_vs_write_fsync": min(ours_runs) / fsync_s,
            "bytes_per_message": size / max(1, len(messages)),
        },
    )


def delivery_smtp(
    config: Config,
    messages: Sequence[OutgoingMessage],
    server: Any,
    *,
    repeat: int,
) -> Comparison:
    """Our SmtpTransport against smtplib.SMTP.sendmail, one connection each, same server."""
    assert config.delivery.smtp is not None
    host, port = config.delivery.smtp.host, config.delivery.smtp.port
    sender = config.delivery.from_address
    before = server.messages

    def ours() -> int:
        with open_transport(config.delivery) as transport:
            for number, message in enumerate(messages, 1):
                transport.send(message)
                if number % transport.batch_size == 0:
                    transport.flush()
            transport.flush()
        return len(messages)

    def bare() -> int:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            for message in messages:
                smtp.sendmail(sender, list(message.recipients), message.data)
        return len(messages)

    ours_runs, bare_runs, _, _ = _alternate(ours, bare, repeat, _nothing)
    received = server.messages - before
    expected = 2 * repeat * len(messages)
    if received != expected:
        raise RuntimeError(f"the SMTP server received {received} messages, expected {expected}")
    return Comparison(
        "delivery smtp",
        len(messages),
        "messages",
        min(ours_runs),
        min(bare_runs),
        ours_runs,
        bare_runs,
        {"server_received": received},
    )
