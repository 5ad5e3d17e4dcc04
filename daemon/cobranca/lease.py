"""Who holds a claim, and whether that holder is still alive.

A claim (a letter being sent, a run slot being run) records its holder as host:pid:start, the
process start time making a reused pid harmless. On the same host a dead holder is certain; on
another host only the claim's age can tell, so the caller also applies a timeout.
"""

from __future__ import annotations

import os
import socket
from functools import cache


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            # Field 22 (starttime); the command name in field 2 may contain spaces.
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@cache
def this_worker() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def on_this_host(holder: str) -> bool:
    """Whether the holder (host:pid:start) ran on this machine."""
    return holder.rsplit(":", 2)[0] == socket.gethostname()


def holder_alive(holder: str) -> bool | None:
    """True or False for a holder on this host; None (unknown) for another host."""
    try:
        host, pid_text, start = holder.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    if holder == this_worker():
        return True
    current = _start_time(pid)
    if current is None:
        return False
    return start == "?" or current == start
