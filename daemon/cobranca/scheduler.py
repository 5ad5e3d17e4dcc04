"""`cobranca daemon`: one cron job per layout, firing the same job as `cobranca run`.

The job store is in memory and rebuilt from the YAML at start and on reload; APScheduler's
defaults are overridden (1 s misfire grace, parallel instances) because a letter run that starts
a little late must still run, once. Jobs run one at a time, so layouts never compete for SMTP.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .check import check_templates
from .config import Config, ConfigError, load_config
from .cron import describe_cron, parse_cron
from .runner import RunReport, run_layouts

log = logging.getLogger(__name__)

MISFIRE_GRACE_SECONDS = 3600


class Daemon:
    """Owns the scheduler and the config in force; reload swaps both or neither."""

    def __init__(self, config_path: Path, *, job: Callable[..., RunReport] = run_layouts):
        self.config_path = config_path
        self.config = load_and_check(config_path)
        self.stop_event = threading.Event()
        self.finished_runs: list[RunReport] = []
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
        for job in self.scheduler.get_jobs():
            schedule = describe_cron(self.config.layout(job.id).schedule)
            log.info("layout %s: runs %s; next run at %s", job.id, schedule, job.next_run_time)

    def _schedule(self, config: Config) -> None:
        self.scheduler.remove_all_jobs()
        for layout in config.layouts:
            if not layout.enabled:
                continue
            self.scheduler.add_job(
                self.run_layout,
                trigger=parse_cron(layout.schedule, config.zone),
                args=(layout.name,),
                id=layout.name,
                name=f"layout {layout.name}",
                replace_existing=True,
            )

    def run_layout(self, layout_name: str) -> RunReport:
        """The scheduled job: today's letters of one layout, under the config in force now."""
        config = self.config
        as_of = datetime.now(config.zone).date()
        log.info("layout %s: scheduled run for %s", layout_name, as_of)
        report = self._job(
            config, [layout_name], as_of=as_of, trigger="scheduled", stop=self.stop_event
        )
        self.finished_runs.append(report)
        return report

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

    def stop(self) -> None:
        """Let the letter in flight finish, leave the rest for the next run, then exit."""
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def _on_problem(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.error("layout %s: run due at %s was missed", event.job_id, event.scheduled_run_time)
        else:
            log.error("layout %s: run failed: %r", event.job_id, event.exception)


def load_and_check(path: Path) -> Config:
    """A config is good only if its templates load and render too."""
    config = load_config(path)
    problems = check_templates(config, datetime.now(config.zone).date())
    if problems:
        raise ConfigError(problems)
    return config


def serve(config_path: Path) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code."""
    daemon = Daemon(config_path)
    wake = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        daemon.stop_event.set()
        wake.set()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    daemon.start()
    log.info("daemon started with %s", config_path)
    while not daemon.stop_event.is_set():
        wake.wait()
        wake.clear()
        if reload_requested.is_set():
            reload_requested.clear()
            daemon.reload()
    daemon.stop()
    log.info("daemon stopped")
    return 0
