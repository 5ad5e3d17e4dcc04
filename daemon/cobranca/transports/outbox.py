"""Write each message as an .eml file: the demo default, and a spool for another mailer."""

from __future__ import annotations

import os
import re
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Self

from ..models import DeliveryReceipt
from . import DeliveryError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutboxTransport:
    name = "outbox"

    def __init__(self, directory: Path):
        self.directory = directory

    def __enter__(self) -> Self:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create outbox {self.directory}: {exc.strerror}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        """Write atomically (temporary file, fsync, rename): a crash never leaves half a letter."""
        name = _UNSAFE.sub("_", str(message["Message-ID"]).strip("<>")) + ".eml"
        target = self.directory / name
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
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
