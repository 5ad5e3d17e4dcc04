"""Write each message as an .eml file: the demo default, and a spool for another mailer."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Self

from ..models import DeliveryReceipt
from . import DeliveryError, Failure

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutboxTransport:
    name = "outbox"

    def __init__(self, directory: Path):
        self.directory = directory

    def __enter__(self) -> Self:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create outbox {self.directory}: {exc.strerror}"
            raise DeliveryError(reason, Failure.CONNECTION) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def path_for(self, message_id: str) -> Path:
        return self.directory / (_UNSAFE.sub("_", message_id.strip().strip("<>")) + ".eml")

    def delivered(self, message_id: str) -> bool:
        """The write is atomic, so the file exists exactly when the letter was delivered."""
        return self.path_for(message_id).exists()

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> DeliveryReceipt:
        """Write atomically (temporary file, fsync, rename): a crash never leaves half a letter."""
        target = self.path_for(str(message["Message-ID"]))
        try:
            # Not *.eml until complete: a spool consumer never takes a half-written letter.
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".part")
        except OSError as exc:
            reason = f"cannot write to outbox {self.directory}: {exc.strerror}"
            raise DeliveryError(reason) from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(message.as_bytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {target}: {exc.strerror}") from None
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return DeliveryReceipt(transport=self.name, detail=str(target))
