"""An aiosmtpd server on loopback that accepts and counts messages, in its own process.

Its own process, so the server's Python does not compete with the client for one GIL: both our
transport and raw smtplib talk to the same server under the same conditions.
"""

from __future__ import annotations

import multiprocessing
import socket
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any, Self


def free_port() -> int:
    """aiosmtpd refuses port 0: pick a free port first."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _CountingHandler:
    def __init__(self, messages: Synchronized[int], octets: Synchronized[int]):
        self.messages = messages
        self.octets = octets

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.messages.get_lock():
            self.messages.value += 1
        with self.octets.get_lock():
            self.octets.value += len(envelope.original_content or b"")
        return "250 Message accepted for delivery"


def _serve(
    port: int,
    messages: Synchronized[int],
    octets: Synchronized[int],
    ready: Event,
    stop: Event,
) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(
        _CountingHandler(messages, octets),
        hostname="127.0.0.1",
        port=port,
        data_size_limit=64 * 1024 * 1024,
    )
    controller.start()
    try:
        ready.set()
        stop.wait()
    finally:
        controller.stop()


class CountingSmtpServer:
    """`with CountingSmtpServer() as server:` → server.port, server.messages."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.port = free_port()
        self._messages = context.Value("q", 0)
        self._octets = context.Value("q", 0)
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve,
            args=(self.port, self._messages, self._octets, self._ready, self._stop),
            daemon=True,
        )

    def __enter__(self) -> Self:
        self._process.start()
        if not self._ready.wait(30):
            self._process.terminate()
            raise RuntimeError("the SMTP test server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    @property
    def messages(self) -> int:
        return int(self._messages.value)

    @property
    def octets(self) -> int:
        return int(self._octets.value)
