"""The job: run layouts once for an as-of date. `cobranca run` and the scheduler both call this.

config → source (SE1/SA1 rows) → plan → render → deliver → history. A layout's run has two
phases. *Plan*: stream the selected customers, decide each letter, and record it as planned
(unique per layout, customer and day). *Deliver*: take planned letters one at a time with an
atomic claim, re-read their títulos from the ERP, render, send, record the outcome. A crash,
a stop or a second process at any point leaves every letter planned, sent, failed (with why)
or ambiguous — never lost, never sent twice by accident.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .businessdays import SendPolicy
from .config import Config, ConfigError, Layout
from .history import ClaimedLetter, HistoryStore, LetterFinish, LetterOutcome, PlanEntry
from .lease import on_this_host
from .mail import OutgoingMessage, build_message, new_message_id
from .models import CustomerTitles, Disposition, LetterStatus, PlannedLetter, Title
from .plan import (
    SKIP_ALREADY_CLAIMED,
    SKIP_CADENCE,
    SKIP_PAID_SINCE_PLAN,
    SKIP_REASONS,
    cadence_window_start,
    plan_letter,
)
from .render import (
    ComposedLetter,
    LetterTemplates,
    TemplateProblem,
    compose,
    load_templates,
    make_environment,
)
from .source import ProtheusSource, SourceError, TitleFilter
from .transports import DeliveryError, Failure, FlushError, Transport, open_transport

log = logging.getLogger(__name__)


SUMMARY_LIMIT = 1_000  # entries each list of a run's summary holds; the log names every one


@dataclass
class Listed:
    """One list of a run's summary (customers to print, rejected títulos, failures...): its
    first SUMMARY_LIMIT entries, and how many there were in all.

    A company-scale run can have hundreds of thousands (every customer without an e-mail
    address, say); each is logged as it happens, so the summary need not hold them all, and a
    run's memory does not grow with its data's problems.
    """

    entries: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0

    def add(self, who: str, why: str) -> None:
        self.total += 1
        if len(self.entries) < SUMMARY_LIMIT:
            self.entries.append((who, why))

    @property
    def unlisted(self) -> int:
        return self.total - len(self.entries)


LISTS = ("failures", "ambiguities", "prints", "rejected_titles", "invalid_emails", "data_problems")


@dataclass
class LayoutResult:
    """What one layout's run did; counts and reasons for the summary and the run record."""

    layout: str
    as_of: date
    dry_run: bool
    run_id: int | None = None
    planned: int = 0
    carried_over: int = 0  # found planned by another run of the day, still to send
    sent: int = 0
    would_send: int = 0
    left_planned: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failures: Listed = field(default_factory=Listed)
    ambiguities: Listed = field(default_factory=Listed)
    prints: Listed = field(default_factory=Listed)
    rejected_titles: Listed = field(default_factory=Listed)  # (título key, why)
    invalid_emails: Listed = field(default_factory=Listed)  # (customer, the entries ignored)
    data_problems: Listed = field(default_factory=Listed)
    window_closed: str = ""  # why sending stopped mid-run (the send window closed)
    error: str = ""
    interrupted: bool = False

    @property
    def print_needed(self) -> int:
        return self.prints.total

    @property
    def failed(self) -> int:
        return self.failures.total

    @property
    def ambiguous(self) -> int:
        return self.ambiguities.total

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed and not self.ambiguous

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "planned": self.planned,
            "carried_over": self.carried_over,
            "sent": self.sent,
            "would_send": self.would_send,
            "print_needed": self.print_needed,
            "failed": self.failed,
            "ambiguous": self.ambiguous,
            "left_planned": self.left_planned,
            "skipped": dict(sorted(self.skipped.items())),
            "failures": [{"customer": c, "reason": r} for c, r in self.failures.entries],
            "ambiguities": [{"customer": c, "reason": r} for c, r in self.ambiguities.entries],
            "prints": [{"customer": c, "reason": r} for c, r in self.prints.entries],
            "rejected_titles": [{"title": t, "reason": r} for t, r in self.rejected_titles.entries],
            "invalid_emails": [
                {"customer": c, "entries": e} for c, e in self.invalid_emails.entries
            ],
            "data_problems": [{"item": k, "problem": p} for k, p in self.data_problems.entries],
            # Entries beyond the first SUMMARY_LIMIT of each list above: in the log only.
            "unlisted": {name: getattr(self, name).unlisted for name in LISTS},
            "error": self.error,
            "window_closed": self.window_closed,
            "interrupted": self.interrupted,
        }


@dataclass
class RunReport:
    results: list[LayoutResult]
    recovered: list[tuple[int, str]] = field(default_factory=list)  # (letter id, new status)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "recovered": [{"letter": i, "status": s} for i, s in self.recovered],
            "layouts": [r.as_dict() for r in self.results],
        }


class Pacer:
    """Spaces letters to the configured rate; waits through ``sleep`` so a stop cuts it short."""

    def __init__(
        self, per_minute: int | None, clock: Callable[[], float], sleep: Callable[[float], bool]
    ):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next = clock()

    def wait_turn(self) -> bool:
        """False when a stop was requested while waiting."""
        if not self.interval:
            return True
        delay = self._next - self.clock()
        if delay > 0 and self.sleep(delay):
            return False
        self._next = max(self._next, self.clock()) + self.interval
        return True


class _StopLayout(Exception):
    """The transport is unusable: leave the remaining letters planned for the next run."""


@dataclass
class _Run:
    """What every step of one run shares (built once, passed whole)."""

    config: Config
    source: ProtheusSource
    history: HistoryStore
    transport: Transport
    stop: threading.Event
    clock: Callable[[], float]
    sleep: Callable[[float], bool]
    trigger: str
    policy: SendPolicy | None = None  # None: the operator chose to ignore the calendar
    now: Callable[[], datetime] | None = None

    def refusal(self) -> str | None:
        """Why no letter may leave at this moment (weekend, holiday, outside the window)."""
        if self.policy is None:
            return None
        moment = self.now() if self.now else datetime.now(self.config.zone)
        return self.policy.refusal(moment)

    @functools.cached_property
    def templates_digest(self) -> str:
        """Once per run: the templates cannot change under a run that already loaded them."""
        return templates_digest(self.config.templates_dir)


def run_layouts(
    config: Config,
    layout_names: Sequence[str] = (),
    *,
    as_of: date,
    dry_run: bool = False,
    trigger: str = "manual",
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], bool] | None = None,
    ignore_calendar: bool = False,
    now: Callable[[], datetime] | None = None,
    deliver_only: bool = False,
) -> RunReport:
    """Run the named layouts (all enabled ones when none are named) once for ``as_of``.

    ``clock`` and ``sleep`` pace and back off deliveries; ``sleep`` returns True when the wait
    was cut short by a stop; ``now`` is the wall clock the calendar is checked against. Tests
    pass clocks they control. Outside business days and the send window nothing is planned or
    sent, unless ``ignore_calendar``; a window that closes mid-run leaves the rest planned.
    ``deliver_only`` joins a run another process planned: it sends what is planned, plans nothing.
    """
    layouts = (
        [config.layout(name) for name in layout_names]
        if layout_names
        else [layout for layout in config.layouts if layout.enabled]
    )
    stop = stop or threading.Event()
    report = RunReport([LayoutResult(lay.name, as_of, dry_run) for lay in layouts])
    policy = None if ignore_calendar or dry_run else config.send_policy
    refusal = calendar_refusal(config, policy, now)
    if refusal:
        for result in report.results:
            result.error = refusal
        log.warning("no letters now: %s", refusal)
        return report
    try:
        history = HistoryStore(config.history.engine_url())
    except (SQLAlchemyError, ConfigError, ImportError) as exc:
        _abort(report, f"history store: {error_text(exc)}")
        return report
    try:
        source = ProtheusSource(config.source)
    except (SQLAlchemyError, ConfigError, SourceError, ImportError) as exc:
        _abort(report, error_text(exc), history, config, trigger)
        history.close()
        return report
    transport = open_transport(config.delivery)
    run = _Run(
        config, source, history, transport, stop, clock, sleep or stop.wait, trigger, policy, now
    )
    try:
        with transport:
            if not dry_run:
                report.recovered = recover_interrupted(run)
            _note_sharing_problem(source, report)
            env = make_environment(config.templates_dir)
            for layout, result in zip(layouts, report.results, strict=True):
                if stop.is_set():
                    result.interrupted = True
                    continue
                _run_layout(run, layout, result, env, deliver_only)
    except DeliveryError as exc:  # the transport could not even open (outbox folder)
        for result in report.results:
            result.error = result.error or str(exc)
    except SQLAlchemyError as exc:
        for result in report.results:
            result.error = result.error or error_text(exc)
    finally:
        source.close()
        history.close()
    return report


def _note_sharing_problem(source: ProtheusSource, report: RunReport) -> None:
    """SA1 customers that a shared-SA1 config would leave without a letter, said every run."""
    try:
        problem = source.sharing_problem()
    except SQLAlchemyError:
        return  # the ERP cannot be read: each layout's run fails and records why
    if problem:
        log.warning("%s", problem)
        for result in report.results:
            result.data_problems.add("source.customers_shared", problem)


def calendar_refusal(
    config: Config, policy: SendPolicy | None, now: Callable[[], datetime] | None = None
) -> str | None:
    """The message for a command asked to send when letters may not go out; None when they may."""
    if policy is None:
        return None
    refusal = policy.refusal(now() if now else datetime.now(config.zone))
    if refusal is None:
        return None
    return (
        f"letters may not go out now: {refusal} (calendar in {config.path or 'the config'}: "
        "business days and send window); --ignore-calendar sends anyway"
    )


def _abort(
    report: RunReport,
    message: str,
    history: HistoryStore | None = None,
    config: Config | None = None,
    trigger: str = "",
) -> None:
    """Nothing could run: every layout carries the reason, recorded when the history is up."""
    log.error("run aborted before any letter: %s", message)
    for result in report.results:
        result.error = message
        if history is not None and config is not None and not result.dry_run:
            try:
                result.run_id = history.start_run(
                    result.layout, result.as_of, trigger, config.digest
                )
                _finish_run(history, result)
            except SQLAlchemyError as exc:
                log.error("could not record the failed run: %s", error_text(exc))


def recover_interrupted(run: _Run) -> list[tuple[int, str]]:
    """Letters a dead process left 'sending': confirmed, planned again, or ambiguous.

    Only a transport that can prove it (the outbox's atomic file) turns one into sent or
    planned; for SMTP nobody can know, so it becomes ambiguous and waits for a person. A file
    missing here proves nothing for a letter another host was sending: it wrote to its own
    outbox folder, which may not be this one.
    """
    stale_after = timedelta(seconds=run.config.delivery.claim_timeout_seconds)
    recovered = []
    for record in run.history.stale_sending(stale_after):
        known = (
            run.transport.delivered(record.message_id)
            if record.transport == run.transport.name
            else None
        )
        if known is False and not on_this_host(record.holder):
            known = None
        if known is True:
            outcome = LetterOutcome(
                LetterStatus.SENT,
                "confirmed after an interrupted run",
                sent_at=record.claimed_at,
            )
        elif known is False:
            outcome = LetterOutcome(LetterStatus.PLANNED, "interrupted before delivery")
        else:
            outcome = LetterOutcome(
                LetterStatus.AMBIGUOUS,
                f"interrupted while sending (holder {record.holder} ended): it may or may not "
                "have been delivered; resolve with `cobranca resend` or `cobranca mark-sent`",
            )
        if run.history.resolve_stale(record.id, record.holder, outcome):
            recovered.append((record.id, outcome.status.value))
            log.warning("letter %s: %s", record.id, outcome.reason)
    return recovered


def _run_layout(
    run: _Run, layout: Layout, result: LayoutResult, env: Any, deliver_only: bool = False
) -> None:
    try:
        templates = load_templates(env, layout.template, layout.subject)
    except TemplateProblem as exc:
        result.error = f"template problem, no letter sent: {exc}"
        log.error("layout %s: %s", layout.name, result.error)
        return
    try:
        if not result.dry_run:
            result.run_id = run.history.start_run(
                layout.name, result.as_of, run.trigger, run.config.digest
            )
        log.info("layout %s: run %s for %s%s", layout.name, result.run_id, result.as_of,
                 " (dry run)" if result.dry_run else "")  # fmt: skip
        if not deliver_only:
            _plan(run, layout, result, templates)
        if not result.dry_run and not result.interrupted:
            _deliver_planned(run, layout, result, templates)
    except _StopLayout as exc:
        result.error = str(exc)
    except (SQLAlchemyError, ConfigError, SourceError) as exc:
        result.error = error_text(exc)
    finally:
        if result.error:
            log.error("layout %s: stopped: %s", layout.name, result.error)
        if result.run_id is not None:
            _leave_planned_noted(run, layout, result)
            _finish_run(run.history, result)
    log.info("layout %s: %d sent, %d to print, %d failed, %d ambiguous, %d left planned, "
             "%d skipped", layout.name, result.sent, result.print_needed, result.failed,
             result.ambiguous, result.left_planned, sum(result.skipped.values()))  # fmt: skip


PLAN_BATCH = 50  # letters recorded per history transaction while planning (one commit each)


def _plan(run: _Run, layout: Layout, result: LayoutResult, templates: LetterTemplates) -> None:
    """Record today's letters as planned (or as needing print); send nothing yet."""
    as_of, history = result.as_of, run.history
    if not result.dry_run:
        history.supersede_planned(layout.name, before=as_of)
    last_sent = history.last_letters(layout.name, cadence_window_start(layout, as_of), before=as_of)
    holds = history.suspensions(as_of, run.config.responses.promise_grace_days)
    entries: list[PlanEntry] = []
    rule = layout_rule(layout)
    try:
        for group in run.source.customers_titles(layout.selection, as_of):
            if run.stop.is_set():
                result.interrupted = True
                log.warning("layout %s: stop requested while planning", layout.name)
                return
            customer = group.customer
            key = (customer.code, customer.store)
            letter = plan_letter(group, layout, as_of, last_sent.get(key), holds.get(key, ()))
            for title_key, why in letter.rejected:
                log.warning("layout %s: título %s left out: %s", layout.name, title_key, why)
                result.rejected_titles.add(title_key, why)
            if letter.invalid_emails:
                # How many, not what: an e-mail entry is personal data (logs.py).
                log.warning("layout %s: customer %s: A1_EMAIL entries ignored (not addresses): %d",
                            layout.name, customer.key, len(letter.invalid_emails))  # fmt: skip
                result.invalid_emails.add(customer.key, ", ".join(letter.invalid_emails))
            if letter.disposition is Disposition.SKIP:
                result.skipped[letter.reason] += 1
                continue
            if result.dry_run:
                _dry_render(run, letter, templates, result)
                continue
            printing = letter.disposition is Disposition.PRINT
            entries.append(PlanEntry(
                letter, new_message_id(run.config.delivery),
                transport="print" if printing else run.transport.name,
                status=LetterStatus.PRINT_NEEDED if printing else LetterStatus.PLANNED,
                reason=letter.reason, rule=rule,
                templates_digest=run.templates_digest,
            ))  # fmt: skip
            if len(entries) >= PLAN_BATCH:
                _record_plans(run, result, entries)
                entries = []
    finally:
        _record_plans(run, result, entries)


def _record_plans(run: _Run, result: LayoutResult, entries: Sequence[PlanEntry]) -> None:
    recorded = run.history.record_plans(result.run_id or 0, entries)
    for entry, done in zip(entries, recorded, strict=True):
        letter = entry.letter
        if not done.recorded:
            # Left planned by another run of the day: the delivery below sends it (or helps).
            if done.status is LetterStatus.PLANNED:
                result.carried_over += 1
            else:
                result.skipped[SKIP_ALREADY_CLAIMED] += 1
        elif entry.status is LetterStatus.PRINT_NEEDED:
            _to_print(result, letter.customer.key, letter.reason)
        else:
            result.planned += 1


def _dry_render(
    run: _Run, letter: PlannedLetter, templates: LetterTemplates, result: LayoutResult
) -> None:
    layout = run.config.layout(letter.layout)
    try:
        composed = compose(templates, letter, layout, run.config.creditor, "<dry-run@cobranca>")
    except TemplateProblem as exc:
        result.failures.add(letter.customer.key, f"render failed: {exc}")
        log.error("layout %s: customer %s: render failed: %s", layout.name,
                  letter.customer.key, exc)  # fmt: skip
        return
    _note_problems(layout, letter, composed, result)
    if letter.disposition is Disposition.PRINT:
        _to_print(result, letter.customer.key, letter.reason)
    else:
        result.would_send += 1


def _to_print(result: LayoutResult, who: str, why: str) -> None:
    """A letter that needs paper, in the summary and the log.

    Only a customer's e-mail sends a letter to paper (plan.py). The log says so without the
    reason itself, which quotes the A1_EMAIL entries: personal data (logs.py); the history and
    the summary keep it.
    """
    result.prints.add(who, why)
    log.info("layout %s: customer %s: to print (no usable e-mail address)", result.layout, who)


def _deliver_planned(
    run: _Run, layout: Layout, result: LayoutResult, templates: LetterTemplates
) -> None:
    """Send every letter of this layout and day still planned (this run's or an earlier one's)."""
    pacer = Pacer(run.config.delivery.rate_per_minute, run.clock, run.sleep)
    limit = run.config.delivery.max_letters_per_run
    attempted = 0
    # Until none is left: another process may plan more, or share the delivery, meanwhile.
    while True:
        if run.stop.is_set():
            result.interrupted = True
            return
        if limit is not None and attempted >= limit:
            log.info("layout %s: max_letters_per_run (%d) reached", layout.name, limit)
            return
        if refusal := run.refusal():
            result.window_closed = refusal
            log.warning("layout %s: stopped sending: %s", layout.name, refusal)
            return
        # Wait for the pace first, claim after: no letter sits claimed while this one sleeps,
        # so a process killed in between leaves nothing in doubt. Paced letters go one by one.
        if pacer.interval and not run.history.has_planned(layout.name, result.as_of):
            return  # nothing left: no last wait for nothing
        if not pacer.wait_turn():
            result.interrupted = True
            return
        size = 1 if pacer.interval else run.transport.batch_size
        if limit is not None:
            size = min(size, limit - attempted)
        batch = run.history.claim_batch(layout.name, result.as_of, size)
        if not batch:
            return
        attempted += len(batch)
        deliver_batch(run, layout, batch, templates, result)
        if result.interrupted or result.window_closed:
            return


@dataclass(frozen=True)
class _Delivered:
    """What became of one claimed letter, waiting to be recorded with the rest of its batch."""

    finish: LetterFinish
    who: str
    message_id: str
    recipients: int = 0
    print_reason: str = ""  # set: the letter needs print
    skip_reason: str = ""  # set: the letter was skipped
    unreachable: bool = False  # the transport cannot be reached: stop the layout


def deliver_batch(
    run: _Run,
    layout: Layout,
    batch: Sequence[ClaimedLetter],
    templates: LetterTemplates,
    result: LayoutResult,
) -> None:
    """Re-read, render and send claimed letters, then record their outcomes together.

    The outcomes are recorded only after the transport made the batch final (``flush``): a
    crash before that leaves the letters 'sending', and the next run asks the transport what
    became of each. Letters not tried (a stop, the window closing) go back to planned.
    """
    as_of = batch[0].as_of
    groups = run.source.reread_many(layout.selection, as_of, [c.recnos for c in batch])
    # A response recorded since the plan (a promise on the phone) holds its títulos back too.
    grace = run.config.responses.promise_grace_days
    holds = run.history.suspensions(as_of, grace, [c.customer_code for c in batch])
    delivered: list[_Delivered] = []
    tried = 0
    untried_why = ""
    try:
        for claimed, group in zip(batch, groups, strict=True):
            if tried:  # the first one was checked just before the claim
                if run.stop.is_set():
                    result.interrupted = True
                    untried_why = "run interrupted"
                    break
                if refusal := run.refusal():
                    result.window_closed = refusal
                    log.warning("layout %s: stopped sending: %s", layout.name, refusal)
                    untried_why = refusal
                    break
            tried += 1
            done = _deliver_one(run, layout, claimed, group, holds, templates, result)
            delivered.append(done)
            if done.unreachable:
                untried_why = done.finish.outcome.reason
                break
    finally:
        try:
            _record_batch(run, layout, delivered, result)
        finally:
            if untried_why and tried < len(batch):
                why = f"not sent yet: {untried_why}; the next run sends it"
                run.history.release([c.id for c in batch[tried:]], why)
    if delivered and delivered[-1].unreachable:
        raise _StopLayout(delivered[-1].finish.outcome.reason)


def deliver_claimed(
    run: _Run,
    layout: Layout,
    claimed: ClaimedLetter,
    templates: LetterTemplates,
    result: LayoutResult,
) -> None:
    """Re-read, render, send and record one claimed letter."""
    deliver_batch(run, layout, [claimed], templates, result)


def _deliver_one(
    run: _Run,
    layout: Layout,
    claimed: ClaimedLetter,
    group: CustomerTitles,
    holds: dict[tuple[str, str], list[tuple[str | None, str]]],
    templates: LetterTemplates,
    result: LayoutResult,
) -> _Delivered:
    """Re-check, render and hand one claimed letter to the transport; nothing recorded yet."""
    who = f"{claimed.customer_code}/{claimed.customer_store}"

    def done(
        outcome: LetterOutcome,
        subject: str | None = None,
        titles: Sequence[Title] | None = None,
        raw_message: str | None = None,
        **tally: Any,
    ) -> _Delivered:
        finish = LetterFinish(claimed.id, outcome, subject, titles, raw_message)
        return _Delivered(finish, who, claimed.message_id, **tally)

    if not group.titles:
        reason = "every título was paid or written off since the letter was planned"
        return done(LetterOutcome(LetterStatus.SKIPPED, reason), titles=(),
                    skip_reason=SKIP_PAID_SINCE_PLAN)  # fmt: skip
    key = (claimed.customer_code, claimed.customer_store)
    letter = plan_letter(group, layout, claimed.as_of, None, holds.get(key, ()))
    if letter.disposition is Disposition.PRINT:
        reason = f"on re-reading the ERP: {letter.reason}"
        outcome = LetterOutcome(LetterStatus.PRINT_NEEDED, reason, needs_print=True)
        return done(outcome, titles=letter.titles, print_reason=letter.reason)
    if letter.disposition is not Disposition.SEND:
        outcome = LetterOutcome(LetterStatus.SKIPPED, f"on re-reading the ERP: {letter.reason}")
        return done(outcome, titles=letter.titles, skip_reason=letter.reason)
    try:
        composed = compose(templates, letter, layout, run.config.creditor, claimed.message_id)
    except TemplateProblem as exc:
        return done(LetterOutcome(LetterStatus.FAILED_TEMPORARY, f"render failed: {exc}"))
    attachments: list[tuple[str, bytes]] = []
    if layout.attach_pdf:
        from .pdf import PdfError, render_pdf_one

        try:
            name = f"carta-{layout.name}-{claimed.customer_code}-{claimed.customer_store}.pdf"
            attachments.append((name, render_pdf_one(letter, run.config)))
        except (PdfError, TemplateProblem) as exc:
            reason = f"PDF attachment failed: {exc}"
            return done(LetterOutcome(LetterStatus.FAILED_TEMPORARY, reason))
    _note_problems(layout, letter, composed, result)
    rendered = composed.rendered
    message = build_message(
        rendered, letter.recipients, run.config.delivery, claimed.message_id,
        datetime.now(run.config.zone), layout.name, attachments, composed.images,
    )  # fmt: skip
    outcome, unreachable = _send_with_retries(run, message)
    return done(outcome, subject=rendered.subject, titles=letter.titles, raw_message=message.text,
                recipients=len(letter.recipients), unreachable=unreachable)  # fmt: skip


def _record_batch(
    run: _Run, layout: Layout, delivered: list[_Delivered], result: LayoutResult
) -> None:
    """Make the batch final at the transport, record every outcome in one go, then count.

    A transport that could not make the batch final (a full disk) is unusable: the layout
    stops, its letters not made final are recorded as failed, the rest stay planned.
    """
    if not delivered:
        return
    broken: FlushError | None = None
    try:
        run.transport.flush()
    except FlushError as exc:
        broken = exc
        reason = f"{exc}; retried by the next run"
        for index, item in enumerate(delivered):
            sent = item.finish.outcome.status is LetterStatus.SENT
            if sent and item.message_id in exc.undelivered:
                failed = LetterOutcome(LetterStatus.FAILED_TEMPORARY, reason)
                delivered[index] = replace(item, finish=replace(item.finish, outcome=failed))
    run.history.finish_letters([item.finish for item in delivered])
    for item in delivered:
        _count(layout, item, result)
    if broken is not None:
        raise _StopLayout(str(broken))


def _count(layout: Layout, item: _Delivered, result: LayoutResult) -> None:
    """A recorded letter in the run's summary and log."""
    outcome, who = item.finish.outcome, item.who
    if item.print_reason:
        _to_print(result, who, item.print_reason)
    elif item.skip_reason:
        result.skipped[item.skip_reason] += 1
    elif outcome.status is LetterStatus.SENT:
        result.sent += 1
        log.info("layout %s: customer %s: sent %s to %d address(es)", layout.name, who,
                 item.message_id, item.recipients)  # fmt: skip
    elif outcome.status is LetterStatus.AMBIGUOUS:
        result.ambiguities.add(who, outcome.reason)
        log.error("layout %s: customer %s: AMBIGUOUS: %s", layout.name, who, outcome.reason)
    elif outcome.status is LetterStatus.PLANNED:
        result.interrupted = True
    else:
        result.failures.add(who, outcome.reason)
        log.error("layout %s: customer %s: not sent: %s", layout.name, who, outcome.reason)


def _note_problems(
    layout: Layout, letter: PlannedLetter, composed: ComposedLetter, result: LayoutResult
) -> None:
    """ERP data a letter left out or could not vouch for (a wrong boleto line, CNPJ...)."""
    for key, problem in composed.problems:
        what = f"título {key}" if "|" in key else f"customer {key or letter.customer.key}"
        log.warning("layout %s: %s: %s", layout.name, what, problem)
        result.data_problems.add(key or letter.customer.key, problem)


def _send_with_retries(run: _Run, message: OutgoingMessage) -> tuple[LetterOutcome, bool]:
    """Temporary failures are retried with backoff; permanent and ambiguous ones never.

    The flag says the server could not be reached at all: the layout stops trying.
    """
    delivery = run.config.delivery
    for attempt in range(1, delivery.retry_attempts + 1):
        try:
            receipt = run.transport.send(message)
        except DeliveryError as exc:
            if exc.kind is Failure.AMBIGUOUS:
                return LetterOutcome(LetterStatus.AMBIGUOUS, str(exc)), False
            if exc.kind is Failure.PERMANENT:
                outcome = LetterOutcome(
                    LetterStatus.FAILED_PERMANENT,
                    f"{exc}; the customer needs a printed letter",
                    needs_print=True,
                )
                return outcome, False
            if attempt == delivery.retry_attempts:
                unreachable = exc.kind is Failure.CONNECTION
                prefix = "SMTP unreachable" if unreachable else "gave up"
                outcome = LetterOutcome(
                    LetterStatus.FAILED_TEMPORARY,
                    f"{prefix} after {attempt} tries: {exc}; retried by the next run",
                )
                return outcome, unreachable
            backoff = delivery.retry_backoff_seconds * 2 ** (attempt - 1)
            log.warning("try %d failed (%s); next in %.1f s", attempt, exc, backoff)
            if run.sleep(backoff):
                return LetterOutcome(LetterStatus.PLANNED, f"stopped while retrying: {exc}"), False
            continue
        refused = "; ".join(f"{rcpt}: {why}" for rcpt, why in receipt.refused.items())
        outcome = LetterOutcome(
            LetterStatus.SENT,
            f"some addresses refused: {refused}" if refused else "",
            sent_at=datetime.now(run.config.zone),
            server_reply=receipt.detail,
        )
        return outcome, False
    raise AssertionError("unreachable")


def _leave_planned_noted(run: _Run, layout: Layout, result: LayoutResult) -> None:
    """Letters still planned at the end say why they are still waiting."""
    why = (
        result.error
        or result.window_closed
        or ("run interrupted" if result.interrupted else "max_letters_per_run")
    )
    try:
        result.left_planned = run.history.note_planned(
            layout.name, result.as_of, f"not sent yet: {why}; the next run sends it"
        )
    except SQLAlchemyError as exc:
        log.error("could not note planned letters: %s", error_text(exc))


def _finish_run(history: HistoryStore, result: LayoutResult) -> None:
    assert result.run_id is not None
    status = "failed" if result.error else ("interrupted" if result.interrupted else "finished")
    counts = {
        "sent": result.sent,
        "print_needed": result.print_needed,
        "failed": result.failed,
        "ambiguous": result.ambiguous,
        "left_planned": result.left_planned,
    }
    try:
        history.finish_run(result.run_id, status=status, counts=counts,
                           skip_reasons=dict(result.skipped), error=result.error)  # fmt: skip
    except SQLAlchemyError as exc:
        log.error("run %s: could not record its end: %s", result.run_id, error_text(exc))


class LetterStateError(Exception):
    """A person asked for something the letter's state does not allow."""


def resolve_letter(
    config: Config,
    letter_id: int,
    *,
    resend: bool,
    operator: str,
    note: str = "",
    ignore_calendar: bool = False,
) -> LayoutResult:
    """A person's decision: mark an ambiguous letter sent, or send it (or a failed one) now."""
    if resend and not ignore_calendar and (refusal := calendar_refusal(config, config.send_policy)):
        raise LetterStateError(refusal)
    history = HistoryStore(config.history.engine_url())
    allowed = (
        (LetterStatus.AMBIGUOUS, LetterStatus.FAILED_TEMPORARY)
        if resend
        else (LetterStatus.AMBIGUOUS,)
    )
    try:
        record = history.letter(letter_id)
        if record is None or record.status not in {s.value for s in allowed}:
            state = "does not exist" if record is None else f"is {record.status}"
            names = " or ".join(s.value for s in allowed)
            action = "resent" if resend else "marked sent"
            raise LetterStateError(f"letter {letter_id} {state}; only {names} letters "
                                   f"can be {action}")  # fmt: skip
        layout = config.layout(record.layout)
        result = LayoutResult(layout.name, record.as_of, dry_run=False, run_id=record.run_id)
        reason = f"{'resend' if resend else 'marked sent'} by {operator}"
        reason += f": {note}" if note else ""
        status = LetterStatus.PLANNED if resend else LetterStatus.SENT
        if not history.resolve(letter_id, status, reason, operator, allowed):
            raise LetterStateError(f"letter {letter_id} changed meanwhile; look again")
        if resend:
            _resend(config, history, layout, letter_id, result)
        return result
    finally:
        history.close()


def _resend(
    config: Config, history: HistoryStore, layout: Layout, letter_id: int, result: LayoutResult
) -> None:
    source = ProtheusSource(config.source)
    transport = open_transport(config.delivery)
    stop = threading.Event()
    run = _Run(config, source, history, transport, stop, time.monotonic, stop.wait, "manual")
    try:
        templates = load_templates(
            make_environment(config.templates_dir), layout.template, layout.subject
        )
        claimed = history.claim_for_sending(letter_id)
        if claimed is not None:
            with transport:
                deliver_claimed(run, layout, claimed, templates, result)
    except _StopLayout as exc:
        result.error = str(exc)
    finally:
        source.close()


def layout_rule(layout: Layout) -> str:
    """The layout's whole rule as recorded with each letter it selected."""
    return json.dumps(layout.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)


@functools.cache
def _digest_of(folder: str, stamp: tuple[tuple[str, float, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode() + b"\0" + (Path(folder) / name).read_bytes() + b"\0")
    return digest.hexdigest()


def templates_digest(folder: Path) -> str:
    """SHA-256 of every file in the templates folder: which templates rendered a letter."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamp = tuple((str(p.relative_to(folder)), p.stat().st_mtime, p.stat().st_size) for p in files)
    return _digest_of(str(folder), stamp)


def error_text(exc: BaseException) -> str:
    """One line for the operator: the driver's own message, never SQL parameters or secrets."""
    if isinstance(exc, ConfigError | SourceError):
        return str(exc)
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def plan_by_hand(
    config: Config, layout: Layout, chosen: TitleFilter, as_of: date, *, force: bool
) -> tuple[list[PlannedLetter], list[tuple[str, str]]]:
    """The letters a desk command would make now, and who gets none (with why).

    The títulos are those the filter picks (as `cobranca titles` lists them) that the layout
    also selects today; the plan is the daemon's, cadence included. ``force`` overrides the
    cadence only — the one-letter-per-layout-and-day rule stays.
    """
    if chosen == TitleFilter():
        raise LetterStateError("choose títulos: --customer, --title or the filters of `titles`")
    source = ProtheusSource(config.source)
    history = HistoryStore(config.history.engine_url())
    letters: list[PlannedLetter] = []
    refused: list[tuple[str, str]] = []
    try:
        wanted = {t.key for g in source.open_titles(chosen, as_of) for t in g.titles}
        if not wanted:
            if chosen.title_keys:
                raise LetterStateError(
                    f"not open títulos selected by layout {layout.name}: "
                    + ", ".join(chosen.title_keys)
                )
            if not chosen.customers:
                raise LetterStateError("no open título matches the selection")
            return [], [(who, "no open título matches the selection") for who in chosen.customers]
        owners = sorted({"/".join(key.split("|")[5:7]) for key in wanted})
        last = history.last_letters(layout.name, cadence_window_start(layout, as_of), before=as_of)
        today = history.letters_of_day(layout.name, as_of)
        found: set[str] = set()
        for group in source.customers_titles(layout.selection, as_of, owners):
            group = replace(group, titles=tuple(t for t in group.titles if t.key in wanted))
            if not group.titles:
                continue
            found.update(t.key for t in group.titles)
            customer = group.customer
            if (customer.code, customer.store) in today:
                refused.append((customer.key, "already has this layout's letter for the day "
                                "(one a day, even with --force)"))  # fmt: skip
                continue
            letter = plan_letter(group, layout, as_of, last.get((customer.code, customer.store)))
            if letter.disposition is Disposition.SKIP and letter.reason == SKIP_CADENCE and force:
                letter = replace(plan_letter(group, layout, as_of, None),
                                 reason="cadence overridden by hand")  # fmt: skip
            if letter.disposition is Disposition.SKIP:
                refused.append((customer.key, SKIP_REASONS.get(letter.reason, letter.reason)))
            else:
                letters.append(letter)
        missing = sorted(k for k in chosen.title_keys if k not in found)
        if missing:
            raise LetterStateError(
                f"not open títulos selected by layout {layout.name}: {', '.join(missing)}"
            )
        selected = {"/".join(key.split("|")[5:7]) for key in found}
        for owner in owners:
            if owner not in selected:
                refused.append((owner, f"no open título that layout {layout.name} selects"))
    finally:
        source.close()
        history.close()
    return letters, refused


def send_by_hand(
    config: Config,
    layout: Layout,
    letters: Sequence[PlannedLetter],
    *,
    operator: str,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    ignore_calendar: bool = False,
) -> LayoutResult:
    """Send letters planned at the desk through the daemon's own path: record, claim, send."""
    as_of = letters[0].as_of if letters else date.today()
    result = LayoutResult(layout.name, as_of, dry_run=False)
    policy = None if ignore_calendar else config.send_policy
    if refusal := calendar_refusal(config, policy):
        result.error = refusal
        return result
    stop = stop or threading.Event()
    history = HistoryStore(config.history.engine_url())
    source = ProtheusSource(config.source)
    transport = open_transport(config.delivery)
    run = _Run(
        config, source, history, transport, stop, time.monotonic, stop.wait, "manual", policy
    )
    try:
        templates = load_templates(
            make_environment(config.templates_dir), layout.template, layout.subject
        )
        result.run_id = history.start_run(layout.name, as_of, "manual", config.digest)
        ids = []
        for letter in letters:
            printing = letter.disposition is Disposition.PRINT
            recorded = history.record_manual(
                result.run_id, letter,
                status=LetterStatus.PRINT_NEEDED if printing else LetterStatus.PLANNED,
                operator=operator, message_id=new_message_id(config.delivery),
                transport="print" if printing else transport.name,
                reason=f"by hand ({operator}){': ' + letter.reason if letter.reason else ''}",
                rule=layout_rule(layout), templates_digest=run.templates_digest,
            )  # fmt: skip
            if not recorded.recorded:  # recorded by the run meanwhile (it was checked)
                result.skipped[SKIP_ALREADY_CLAIMED] += 1
            elif printing:
                _to_print(result, letter.customer.key, letter.reason)
            else:
                result.planned += 1
                ids.append(recorded.letter_id)
        with transport:
            for done, letter_id in enumerate(ids, 1):
                if stop.is_set():
                    result.interrupted = True
                    break
                if refusal := run.refusal():
                    result.window_closed = refusal
                    break
                claimed = history.claim_for_sending(letter_id)
                if claimed is not None:
                    deliver_claimed(run, layout, claimed, templates, result)
                if progress is not None:
                    progress(done, len(ids))
    except _StopLayout as exc:
        result.error = str(exc)
    except (SQLAlchemyError, SourceError, DeliveryError) as exc:
        result.error = error_text(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    finally:
        if result.run_id is not None:
            _finish_run(history, result)
        source.close()
        history.close()
    return result
