"""Claim holders: a dead process on this host is certain, another host is only known by age."""

from __future__ import annotations

import socket
import subprocess
import sys

from cobranca.lease import holder_alive, this_worker
from cobranca.runner import Pacer


def test_this_process_is_alive() -> None:
    assert holder_alive(this_worker()) is True


def test_a_finished_process_is_dead_and_a_reused_pid_is_not_mistaken_for_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert holder_alive(f"{socket.gethostname()}:{child.pid}:123") is False
    host, pid, _ = this_worker().rsplit(":", 2)
    # Our own pid with another start time: a different (earlier) process that had this pid.
    assert holder_alive(f"{host}:{pid}:1") is False


def test_another_host_is_unknown() -> None:
    assert holder_alive("some-other-host:1:1") is None
    assert holder_alive("garbage") is None


def test_pacer_spaces_letters_to_the_rate() -> None:
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        now[0] += seconds
        return False

    pacer = Pacer(6, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        assert pacer.wait_turn()
        now[0] += 1.0  # sending takes a second
    assert waits == [9.0, 9.0, 9.0]  # 10 s apart, less the second each send took


def test_pacer_without_rate_never_waits_and_stop_cuts_a_wait() -> None:
    assert Pacer(None, clock=lambda: 0.0, sleep=lambda s: 1 / 0).wait_turn()
    pacer = Pacer(1, clock=lambda: 0.0, sleep=lambda seconds: True)
    assert pacer.wait_turn()  # the first letter goes at once
    assert not pacer.wait_turn()  # the second waits 60 s, and the stop ends the wait
