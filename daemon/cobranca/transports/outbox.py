"""Write each message as an .eml file: the demo default, and a spool for another mailer.

Letters are written in batches: each one to a hidden temporary file; ``flush`` then makes the
whole batch durable with one filesystem sync, renames each file to its final ``.eml`` name and
syncs the folder. A final name therefore always holds a complete, durable letter, and it exists
exactly when the letter was delivered — which is how a run after a crash tells.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Self

from ..mail import OutgoingMessage
from ..models import DeliveryReceipt
from . import DeliveryError, Failure, FlushError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


class OutboxTransport:
    name = "outbox"

    def __init__(self, directory: Path, batch_size: int = 200):
        self.directory = directory
        self.batch_size = batch_size  # the files prove what was delivered: batches are safe
        self._pending: list[tuple[str, Path, Path]] = []  # (message id, temporary, final)

    def __enter__(self) -> Self:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create outbox {self.directory}: {exc.strerror}"
            raise DeliveryError(reason, Failure.CONNECTION) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Letters never flushed were not delivered: their temporary files go."""
        for _, temporary, _ in self._pending:
            temporary.unlink(missing_ok=True)
        self._pending.clear()

    def path_for(self, message_id: str) -> Path:
        return self.directory / (_UNSAFE.sub("_", message_id.strip().strip("<>")) + ".eml")

    def delivered(self, message_id: str) -> bool:
        """A final name exists exactly when the letter was delivered (see the module's doc)."""
        return self.path_for(message_id).exists()

    def send(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Write the letter under a temporary name; ``flush`` delivers it."""
        target = self.path_for(message.message_id)
        # Not *.eml until complete: a spool consumer never takes a half-written letter. The
        # name is the letter's own (what a crashed earlier try of it left is overwritten).
        temporary = self.directory / f".tmp-{target.stem}.part"
        try:
            fd = os.open(temporary, _CREATE, 0o600)
        except OSError as exc:
            reason = f"cannot write to outbox {self.directory}: {exc.strerror}"
            raise DeliveryError(reason) from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(message.data)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {target}: {exc.strerror}") from None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._pending.append((message.message_id, temporary, target))
        return DeliveryReceipt(transport=self.name, detail=str(target))

    def flush(self) -> None:
        """Sync the batch's data, rename each file to its final name, sync the folder."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        done = 0
        try:
            folder = os.open(self.directory, os.O_RDONLY)
            try:
                _sync_filesystem(folder)
                for _, temporary, target in pending:
                    os.replace(temporary, target)
                    done += 1
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            for _, temporary, _ in pending[done:]:
                temporary.unlink(missing_ok=True)
            undelivered = frozenset(message_id for message_id, _, _ in pending[done:])
            if done == len(pending):  # all renamed, only the folder's sync failed
                undelivered = frozenset()
            raise FlushError(
                f"cannot finish writing to outbox {self.directory}: {exc.strerror}", undelivered
            ) from None


def _sync_filesystem(fd: int) -> None:
    """syncfs(2): one call makes every file written to this filesystem durable."""
    if _syncfs is None:
        os.sync()
        return
    if _syncfs(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _load_syncfs() -> Callable[[int], int] | None:
    library = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(library, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None  # not Linux: os.sync() instead
    function.argtypes = [ctypes.c_int]
    return function


_syncfs = _load_syncfs()
