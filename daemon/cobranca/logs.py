"""Log lines for the journal: one event per line, a priority journald understands, no secrets.

Under systemd (stderr connected to the journal: $JOURNAL_STREAM is set) each line starts with
`<N>`, the syslog priority journald reads; `--log-format json` writes one JSON object per line
for log shippers. Either way: customer code, never address or e-mail contents.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def priority(level: int) -> int:
    for threshold in sorted(PRIORITIES, reverse=True):
        if level >= threshold:
            return PRIORITIES[threshold]
    return 7


class JournalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{priority(record.levelno)}>{text}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "priority": priority(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# Not inside <...>: Message-IDs stay whole, so a letter can be found in the mail server's log.
_ADDRESS = re.compile(r"(?<![<A-Za-z0-9._%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


class RedactAddresses(logging.Filter):
    """E-mail addresses (in SMTP replies, say) keep only their first letter and domain (LGPD)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _ADDRESS.sub(r"\1***@\2", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now, not to the stream it first saw (which a caller
    such as a test runner may have closed since)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(level: str, style: str) -> None:
    """text (journal prefixes under systemd), or json."""
    handler = CurrentStderr()
    handler.addFilter(RedactAddresses())
    if style == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # APScheduler narrates every job it adds; our own lines say what matters.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
