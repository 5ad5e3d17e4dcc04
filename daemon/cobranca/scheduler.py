"""`cobranca daemon`: one cron job per layout, firing the same job as `cobranca run`.

The job store is in memory and rebuilt from the YAML at start and on reload; APScheduler's
defaults are overridden (1 s misfire grace, parallel instances) because a letter run that starts
a little late must still run, once. Jobs run one at a time, so layouts never compete for SMTP.

Exactly one scheduled run per layout and day comes from the run-slot ledger in the history
store (unique per layout and date), not from the scheduler: a daemon that starts after a
layout's time catches up today's slot once; a run that could not reach a database is retried
later the same day; a second daemon on the same history finds the slot taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import FrameType

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy.exc import SQLAlchemyError

from .businessdays import BusinessDayTrigger, first_fire_on
from .check import check_templates
from .config import Config, ConfigError, Layout, load_config
from .cron import describe_cron, parse_cron
from .history import HistoryStore
from .mail import new_message_id, serialize
from .notify import notify, watchdog_interval
from .runner import LayoutResult, RunReport, error_text, run_layouts
from .transports import DeliveryError, open_transport

log = logging.getLogger(__name__)

MISFIRE_GRACE_SECONDS = 3600
SHARED_TRIGGER = "shared"  # the run record of a daemon's pass through a run another daemon holds


class Daemon:
    """Owns the scheduler and the config in force; reload swaps both or neither."""

    def __init__(self, config_path: Path, *, job: Callable[..., RunReport] = run_layouts):
        self.config_path = config_path
        self.config = load_and_check(config_path)
        self.stop_event = threading.Event()
        # The latest scheduled run's report (for the status line) and how many ran: a daemon
        # runs for months, and a company-scale report lists thousands of customers.
        self.last_report: RunReport | None = None
        self.runs_finished = 0
        self._job = job
        self.scheduler = BackgroundScheduler(
            timezone=self.config.zone,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            },
        )
        self.scheduler.add_listener(self._on_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def start(self) -> None:
        self._schedule(self.config)
        self.scheduler.start()
        if self.config.daemon.catch_up:
            self.catch_up()
        for layout in self.config.layouts:
            job = self.scheduler.get_job(layout.name)
            if job is not None:
                log.info("layout %s: runs %s; next run at %s", layout.name,
                         describe_cron(layout.schedule), job.next_run_time)  # fmt: skip

    def _schedule(self, config: Config) -> None:
        self.scheduler.remove_all_jobs()
        for layout in config.layouts:
            if not layout.enabled:
                continue
            self.scheduler.add_job(
                self.run_layout,
                trigger=layout_trigger(config, layout),
                args=(layout.name,),
                id=layout.name,
                name=f"layout {layout.name}",
                replace_existing=True,
            )

    def run_layout(self, layout_name: str, attempt: int = 0) -> RunReport | None:
        """The scheduled job: today's letters of one layout, if today's slot is still free."""
        config = self.config
        as_of = datetime.now(config.zone).date()
        stale_after = timedelta(seconds=config.delivery.claim_timeout_seconds)
        try:
            history = HistoryStore(config.history.engine_url())
            try:
                if not history.claim_slot(layout_name, as_of, stale_after=stale_after):
                    slot = history.slot(layout_name, as_of)
                    if slot is None or slot.status == "finished":
                        log.info("layout %s: today's run (%s) is done", layout_name, as_of)
                        return None
                    return self._share_run(layout_name, as_of, slot.holder)
            finally:
                history.close()
        except (SQLAlchemyError, ConfigError) as exc:
            self._retry_later(layout_name, attempt, f"history store unreachable: {error_text(exc)}")
            return None
        log.info("layout %s: scheduled run for %s", layout_name, as_of)
        report = self._job(
            config, [layout_name], as_of=as_of, trigger="scheduled", stop=self.stop_event
        )
        self.last_report = report
        self.runs_finished += 1
        result = report.results[0]
        unfinished = result.error or result.failed or result.left_planned or result.interrupted
        try:
            history = HistoryStore(config.history.engine_url())
            try:
                history.finish_slot(layout_name, as_of, ok=not unfinished, error=result.error)
            finally:
                history.close()
        except SQLAlchemyError as exc:
            log.error("layout %s: could not close today's slot: %s", layout_name,
                      error_text(exc))  # fmt: skip
        if unfinished and not self.stop_event.is_set():
            why = result.error or "letters failed or left planned"
            self._retry_later(layout_name, attempt, why)
        self._alert_problems(layout_name, as_of, result, "run")
        return report

    def _alert_problems(
        self, layout_name: str, as_of: date, result: LayoutResult, what: str
    ) -> None:
        """An operator alert for a run (or a share of one) that failed, or whose letters did:
        ambiguous ones wait for a person, and failed ones may need paper."""
        if not (result.error or result.failed or result.ambiguous):
            return
        self.alert(
            f"layout {layout_name}: {what} of {as_of} "
            + ("failed" if result.error else "finished with problems"),
            f"sent {result.sent}, failed {result.failed}, ambiguous {result.ambiguous}, "
            f"left planned {result.left_planned}\n{result.error}\n"
            "See `cobranca status` and `cobranca letters --status ambiguous`.",
        )

    def _share_run(self, layout_name: str, as_of: date, holder: str) -> RunReport:
        """Today's run is another daemon's: send its planned letters too, then watch it.

        Sharing adds senders to a big run (each letter is claimed by one of them). Watching
        takes the slot over if its holder dies: the re-check after the claim timeout finds the
        holder gone, runs the layout here, and the dead one's letter in flight turns ambiguous.
        """
        config = self.config
        log.info("layout %s: today's run (%s) is running in %s; sending its planned letters too",
                 layout_name, as_of, holder)  # fmt: skip
        report = self._job(
            config, [layout_name], as_of=as_of, trigger=SHARED_TRIGGER, stop=self.stop_event,
            deliver_only=True,
        )  # fmt: skip
        # The letters this daemon sent are its to report: the holder alerts only on its own.
        self._alert_problems(
            layout_name, as_of, report.results[0], f"share (on {socket.gethostname()}) of the run"
        )
        now = datetime.now(config.zone)
        when = now + timedelta(seconds=config.delivery.claim_timeout_seconds)
        if self.stop_event.is_set() or config.send_policy.moved(when).date() != now.date():
            return report
        self.scheduler.add_job(
            self.run_layout,
            trigger=DateTrigger(run_date=config.send_policy.moved(when)),
            args=(layout_name,),
            id=f"{layout_name}:watch",
            name=f"layout {layout_name} (running elsewhere: check again)",
            replace_existing=True,
        )
        return report

    def alert(self, subject: str, body: str) -> bool:
        """Tell the operator (daemon.alert_email), through the letters' own transport."""
        address = self.config.daemon.alert_email
        if not address:
            return False
        delivery = self.config.delivery
        message = EmailMessage()
        message["From"] = delivery.from_address
        message["To"] = address
        message["Subject"] = f"[cobranca] {subject}"
        message["Message-ID"] = new_message_id(delivery)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        try:
            with open_transport(delivery) as transport:
                transport.send(serialize(message, [address]))
                transport.flush()
        except (DeliveryError, ConfigError) as exc:
            log.error("could not send the alert to the operator: %s", exc)
            return False
        return True

    def _retry_later(self, layout_name: str, attempt: int, why: str) -> None:
        settings = self.config.daemon
        if attempt >= settings.retry_limit:
            log.error("layout %s: %s; no retries left today", layout_name, why)
            return
        now = datetime.now(self.config.zone)
        when = self.config.send_policy.next_allowed(now + timedelta(minutes=settings.retry_minutes))
        if when.date() != now.date():
            log.warning("layout %s: %s; no retry today: letters may not go out after %s "
                        "(the next scheduled run takes over)", layout_name, why,
                        now.strftime("%H:%M"))  # fmt: skip
            return
        log.warning("layout %s: %s; retrying at %s", layout_name, why, when)
        self.scheduler.add_job(
            self.run_layout,
            trigger=DateTrigger(run_date=when),
            args=(layout_name, attempt + 1),
            id=f"{layout_name}:retry",
            name=f"layout {layout_name} (retry {attempt + 1})",
            replace_existing=True,
        )

    def catch_up(self) -> list[str]:
        """Run now each layout whose time today has passed and whose slot is not finished.

        Only today's slot: a daemon down for three days sends the one letter each customer is
        due today, not three.
        """
        config = self.config
        now = datetime.now(config.zone)
        policy = config.send_policy
        if not policy.allows(now):
            return []  # today's runs, if any, are still ahead or the day is over
        due = []
        for layout in config.layouts:
            if not layout.enabled:
                continue
            # Includes a run moved onto today from the weekend, a holiday or last night.
            first_today = first_fire_on(layout_trigger(config, layout), now.date())
            if first_today is None or first_today > now:
                continue
            due.append(layout.name)
            self.scheduler.add_job(
                self.run_layout,
                args=(layout.name,),
                id=f"{layout.name}:catch-up",
                name=f"layout {layout.name} (catch-up)",
                replace_existing=True,
            )
        if due:
            log.info("catching up today's runs of: %s", ", ".join(due))
        return due

    def reload(self) -> bool:
        """Re-read config and templates; on any problem keep running on the last good config."""
        try:
            config = load_and_check(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the previous config:\n%s", exc)
            return False
        self.config = config
        self._schedule(config)
        log.info("config reloaded from %s (%d layouts)", self.config_path, len(config.layouts))
        return True

    def status_line(self) -> str:
        """One line for `systemctl status`: the next run and the last result."""
        jobs = [j for j in self.scheduler.get_jobs() if j.next_run_time is not None]
        parts = []
        if jobs:
            job = min(jobs, key=lambda j: j.next_run_time)
            parts.append(f"next: {job.id} at {job.next_run_time:%Y-%m-%d %H:%M}")
        if self.last_report is not None:
            result = self.last_report.results[0]
            outcome = "error" if result.error else "ok"
            parts.append(
                f"last: {result.layout} {outcome}, {result.sent} sent, {result.failed} failed, "
                f"{result.ambiguous} ambiguous"
            )
        return "; ".join(parts) or "no layout scheduled"

    def stop(self) -> None:
        """Let the letter in flight finish, leave the rest for the next run, then exit."""
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def _on_problem(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            what = f"run due at {event.scheduled_run_time} was missed"
        else:
            what = f"run failed: {event.exception!r}"
        log.error("layout %s: %s", event.job_id, what)
        self.alert(f"layout {event.job_id}: {what}", what)


def layout_trigger(config: Config, layout: Layout) -> BusinessDayTrigger:
    """The layout's cron, moved to business days and into the send window."""
    return BusinessDayTrigger(parse_cron(layout.schedule, config.zone), config.send_policy)


def load_and_check(path: Path) -> Config:
    """A config is good only if its templates load and render too."""
    config = load_config(path)
    problems = check_templates(config, datetime.now(config.zone).date())
    if problems:
        raise ConfigError(problems)
    return config


class _Wakeup:
    """Wakes the control loop, from signal handlers and from the scheduler's threads alike.

    A signal handler runs in the main thread between any two of its bytecodes, also while it
    holds a threading.Event's lock inside wait() or clear(): an Event set from the handler
    then waits for itself, forever (a reload hung the daemon so, rarely, in CI). So handlers
    only note the signal, and the signal itself is written to this pipe from C
    (signal.set_wakeup_fd), which the loop waits on.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._signals: list[int] = []

    def install(self, *signums: int) -> None:
        for signum in signums:
            signal.signal(signum, self._note)
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # one C call: safe at any point of the main thread

    def poke(self) -> None:
        """From any thread: wake the loop."""
        with contextlib.suppress(BlockingIOError):  # full: the loop has wake-ups to read
            os.write(self._write, b"\0")

    def wait(self, timeout: float | None) -> list[int]:
        """Until a signal, a poke or the timeout; the signals received since the last call."""
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass
        received = []
        while self._signals:
            received.append(self._signals.pop(0))
        return received

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._read)
        os.close(self._write)


def serve(config_path: Path) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code.

    Under systemd (Type=notify) it says READY=1 once scheduled, keeps STATUS= current (next
    run, last result), pings the watchdog from the control loop, and says RELOADING=1 /
    STOPPING=1 around a reload and a stop.
    """
    daemon = Daemon(config_path)
    wakeup = _Wakeup()
    wakeup.install(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    daemon.scheduler.add_listener(lambda event: wakeup.poke(), EVENT_JOB_EXECUTED)
    daemon.start()
    log.info("daemon started with %s", config_path)
    notify("READY=1", f"STATUS={daemon.status_line()}")
    interval = watchdog_interval()
    while not daemon.stop_event.is_set():
        received = wakeup.wait(interval)
        if interval:
            notify("WATCHDOG=1")
        stops = [signum for signum in received if signum != signal.SIGHUP]
        if stops:
            log.info("received %s: stopping", signal.Signals(stops[0]).name)
            daemon.stop_event.set()
            break
        if signal.SIGHUP in received:
            notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            daemon.reload()
            notify("READY=1")
        notify(f"STATUS={daemon.status_line()}")
    notify("STOPPING=1", "STATUS=stopping: finishing the letter in flight")
    daemon.stop()
    wakeup.close()
    log.info("daemon stopped")
    return 0
