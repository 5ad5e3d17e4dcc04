"""The job: run layouts once for an as-of date. `cobranca run` and the scheduler both call this.

config → source (SE1/SA1 rows) → plan → render → deliver → history, one customer at a time.
One bad letter is recorded as failed with its reason and never stops the others; a problem
that stops a whole layout (unreadable template, database down) is reported for that layout.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .config import Config, ConfigError, Layout
from .history import HistoryStore, LetterOutcome
from .mail import build_message, new_message_id
from .models import Disposition, LetterStatus, PlannedLetter
from .plan import SKIP_ALREADY_CLAIMED, cadence_window_start, plan_letter
from .render import (
    LetterTemplates,
    TemplateProblem,
    letter_context,
    load_templates,
    make_environment,
)
from .source import ProtheusSource, SourceError, TitleSource
from .transports import DeliveryError, Transport, open_transport

log = logging.getLogger(__name__)


@dataclass
class LayoutResult:
    """What one layout's run did; counts and reasons for the summary and the run record."""

    layout: str
    as_of: date
    dry_run: bool
    run_id: int | None = None
    sent: int = 0
    would_send: int = 0
    print_needed: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    prints: list[tuple[str, str]] = field(default_factory=list)
    rejected_titles: list[tuple[str, str]] = field(default_factory=list)
    invalid_emails: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "sent": self.sent,
            "would_send": self.would_send,
            "print_needed": self.print_needed,
            "failed": self.failed,
            "skipped": dict(sorted(self.skipped.items())),
            "failures": [{"customer": c, "reason": r} for c, r in self.failures],
            "prints": [{"customer": c, "reason": r} for c, r in self.prints],
            "rejected_titles": [{"title": t, "reason": r} for t, r in self.rejected_titles],
            "invalid_emails": [{"customer": c, "entries": e} for c, e in self.invalid_emails],
            "error": self.error,
            "interrupted": self.interrupted,
        }


@dataclass
class RunReport:
    results: list[LayoutResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "layouts": [r.as_dict() for r in self.results]}


class _LazyTransport:
    """Connects on the first letter that needs it: a run with nothing to send opens nothing.

    If the connection cannot be opened, the following letters are not tried against the same
    dead server: each is recorded as failed with the connection's reason, to be retried by the
    next run.
    """

    def __init__(self, transport: Transport):
        self.transport = transport
        self.name = transport.name
        self._open = False
        self._broken: DeliveryError | None = None

    def send(self, message: Any) -> Any:
        if self._broken is not None:
            raise DeliveryError(f"not attempted: {self._broken}")
        if not self._open:
            try:
                self.transport.__enter__()
            except DeliveryError as exc:
                self._broken = exc
                raise
            self._open = True
        return self.transport.send(message)

    def close(self) -> None:
        if self._open:
            self._open = False
            self.transport.__exit__(None, None, None)


def run_layouts(
    config: Config,
    layout_names: Sequence[str] = (),
    *,
    as_of: date,
    dry_run: bool = False,
    trigger: str = "manual",
    stop: threading.Event | None = None,
) -> RunReport:
    """Run the named layouts (all enabled ones when none are named) once for ``as_of``."""
    layouts = (
        [config.layout(name) for name in layout_names]
        if layout_names
        else [layout for layout in config.layouts if layout.enabled]
    )
    stop = stop or threading.Event()
    results = [LayoutResult(layout=lay.name, as_of=as_of, dry_run=dry_run) for lay in layouts]
    source: ProtheusSource | None = None
    try:
        source = ProtheusSource(config.source)
        history = HistoryStore(config.history.engine_url())
    except (SQLAlchemyError, ConfigError, SourceError, ImportError) as exc:
        if source is not None:
            source.close()
        message = _error_text(exc)
        log.error("run aborted before any letter: %s", message)
        for result in results:
            result.error = message
        return RunReport(results)
    try:
        env = make_environment(config.templates_dir)
        for layout, result in zip(layouts, results, strict=True):
            if stop.is_set():
                result.interrupted = True
                continue
            _run_layout(config, layout, result, env, source, history, trigger, stop)
    finally:
        source.close()
        history.close()
    return RunReport(results)


def _run_layout(
    config: Config,
    layout: Layout,
    result: LayoutResult,
    env: Any,
    source: TitleSource,
    history: HistoryStore,
    trigger: str,
    stop: threading.Event,
) -> None:
    as_of = result.as_of
    try:
        templates = load_templates(env, layout.template, layout.subject)
    except TemplateProblem as exc:
        result.error = f"template problem, no letter sent: {exc}"
        log.error("layout %s: %s", layout.name, result.error)
        return
    transport = _LazyTransport(open_transport(config.delivery))
    try:
        last_sent = history.last_letters(layout.name, cadence_window_start(layout, as_of))
        if not result.dry_run:
            result.run_id = history.start_run(layout.name, as_of, trigger, config.digest)
        log.info(
            "layout %s: run %s started for %s%s",
            layout.name, result.run_id, as_of, " (dry run)" if result.dry_run else "",
        )  # fmt: skip
        for group in source.customers_titles(layout.selection, as_of):
            if stop.is_set():
                result.interrupted = True
                log.warning("layout %s: stop requested; remaining letters left for later",
                            layout.name)  # fmt: skip
                break
            result.rejected_titles.extend(group.rejected)
            customer = group.customer
            letter = plan_letter(
                group, layout, as_of, last_sent.get((customer.code, customer.store))
            )
            if letter.invalid_emails:
                result.invalid_emails.append((customer.key, ", ".join(letter.invalid_emails)))
            if letter.disposition is Disposition.SKIP:
                result.skipped[letter.reason] += 1
                continue
            _deliver(config, layout, letter, templates, transport, history, result)
    except (SQLAlchemyError, ConfigError) as exc:
        result.error = _error_text(exc)
        log.error("layout %s: stopped: %s", layout.name, result.error)
    except DeliveryError as exc:
        result.error = str(exc)
        log.error("layout %s: stopped: %s", layout.name, result.error)
    finally:
        transport.close()
        if result.run_id is not None:
            _finish_run(history, result)
    log.info(
        "layout %s: %d sent, %d to print, %d failed, %d skipped",
        layout.name, result.sent, result.print_needed, result.failed, sum(result.skipped.values()),
    )  # fmt: skip


def _deliver(
    config: Config,
    layout: Layout,
    letter: PlannedLetter,
    templates: LetterTemplates,
    transport: _LazyTransport,
    history: HistoryStore,
    result: LayoutResult,
) -> None:
    """Render, claim, hand over, record: the claim always precedes the hand-over."""
    customer = letter.customer.key
    message_id = new_message_id(config.delivery)
    printing = letter.disposition is Disposition.PRINT
    try:
        rendered = templates.render(letter_context(letter, config.creditor.model_dump()))
    except TemplateProblem as exc:
        reason = f"render failed: {exc}"
        result.failed += 1
        result.failures.append((customer, reason))
        log.error("layout %s: customer %s: %s", layout.name, customer, reason)
        if not result.dry_run:
            history.claim(
                result.run_id or 0, letter, subject="", message_id=message_id,
                transport="print" if printing else transport.name,
                status=LetterStatus.FAILED, reason=reason,
            )  # fmt: skip
        return
    if result.dry_run:
        if printing:
            result.print_needed += 1
            result.prints.append((customer, letter.reason))
        else:
            result.would_send += 1
        return
    assert result.run_id is not None
    letter_id = history.claim(
        result.run_id, letter, subject=rendered.subject, message_id=message_id,
        transport="print" if printing else transport.name,
        status=LetterStatus.PRINT_NEEDED if printing else LetterStatus.SENDING,
        reason=letter.reason,
    )  # fmt: skip
    if letter_id is None:
        result.skipped[SKIP_ALREADY_CLAIMED] += 1
        return
    if printing:
        result.print_needed += 1
        result.prints.append((customer, letter.reason))
        log.info("layout %s: customer %s needs a printed letter: %s",
                 layout.name, customer, letter.reason)  # fmt: skip
        return
    now = datetime.now(config.zone)
    message = build_message(
        rendered, letter.recipients, config.delivery, message_id, now, layout.name
    )
    try:
        receipt = transport.send(message)
    except DeliveryError as exc:
        history.finish_letter(letter_id, LetterOutcome(LetterStatus.FAILED, str(exc)))
        result.failed += 1
        result.failures.append((customer, str(exc)))
        log.error("layout %s: customer %s: not sent: %s", layout.name, customer, exc)
        return
    reason = f"refused: {receipt.refused}" if receipt.refused else ""
    history.finish_letter(letter_id, LetterOutcome(LetterStatus.SENT, reason, now))
    result.sent += 1
    log.info("layout %s: customer %s: sent %s to %d address(es)",
             layout.name, customer, message_id, len(letter.recipients))  # fmt: skip


def _finish_run(history: HistoryStore, result: LayoutResult) -> None:
    assert result.run_id is not None
    status = "failed" if result.error else ("interrupted" if result.interrupted else "finished")
    try:
        history.finish_run(
            result.run_id,
            status=status,
            sent=result.sent,
            print_needed=result.print_needed,
            failed=result.failed,
            skip_reasons=dict(result.skipped),
            error=result.error,
        )
    except SQLAlchemyError as exc:
        log.error("run %s: could not record its end: %s", result.run_id, _error_text(exc))


def _error_text(exc: BaseException) -> str:
    """One line for the operator: the driver's own message, never SQL parameters or secrets."""
    if isinstance(exc, ConfigError | SourceError):
        return str(exc)
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"
