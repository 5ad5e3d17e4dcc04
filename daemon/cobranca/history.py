"""The history store: runs, run slots, letters, their títulos, and every letter's state changes.

Auditors read it and the plan trusts it (cadence), so a letter is recorded here as *planned*,
under a unique key enforced by the database (layout + customer + as-of date), before anything is
handed to a transport; it moves to *sending* by an atomic compare-and-set that only one process
can win, and its outcome is written right after. Money is stored exactly: NUMERIC where the
database has it, text on SQLite.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import URL, Dialect, Engine, Row, make_url
from sqlalchemy.exc import (
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.sql import CompoundSelect, Executable, Select
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from .config import ConfigError, Database
from .inlists import in_values
from .lease import holder_alive, this_worker
from .models import CADENCE_STATUSES, LetterStatus, PlannedLetter, Title


class Money(TypeDecorator[Decimal]):
    """NUMERIC(16,2) on databases that have it; exact text on SQLite (whose NUMERIC is float)."""

    impl = Numeric(16, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(24))
        return dialect.type_descriptor(Numeric(16, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and come back timezone-aware on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the history store")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


SCHEMA_VERSION = 2
# Indexes an earlier release made that now slow a run down; dropped when a history is opened.
SUPERSEDED_INDEXES = ("ix_letter_queue",)


class SchemaRecord(Base):
    """Which layout of these tables the database holds, so a mismatch is refused, not misread."""

    __tablename__ = "cobranca_schema"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class HistorySchemaError(ConfigError):
    """The history database was written by another version of cobranca."""

    def __init__(self, message: str):
        super().__init__([message])


class RunRecord(Base):
    __tablename__ = "cobranca_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layout: Mapped[str] = mapped_column(String(64), index=True)
    as_of: Mapped[date] = mapped_column(Date)
    trigger: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str] = mapped_column(String(255))
    config_digest: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    sent: Mapped[int] = mapped_column(Integer, default=0)
    print_needed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    ambiguous: Mapped[int] = mapped_column(Integer, default=0)
    left_planned: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    skip_reasons: Mapped[str] = mapped_column(Text, default="{}")


class RunSlotRecord(Base):
    """The scheduler's ledger: one scheduled run per layout and day, whoever runs it."""

    __tablename__ = "cobranca_run_slots"
    __table_args__ = (UniqueConstraint("layout", "as_of", name="uq_run_slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layout: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    holder: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    error: Mapped[str] = mapped_column(Text, default="")


class LetterRecord(Base):
    __tablename__ = "cobranca_letters"
    __table_args__ = (
        # The idempotency key: one letter per layout, customer and day, whoever runs it.
        UniqueConstraint("layout", "customer_code", "customer_store", "as_of", name="uq_letter"),
        # The delivery queue: the next planned letter of a layout and day, in one index probe.
        # Status first, so the queue's index serves only look-ups by status: one by layout
        # and day alone (planning a letter: does the customer have one today?) must go through
        # the unique key. Databases without statistics (SQLite; PostgreSQL before its first
        # ANALYZE) took a (layout, day) index for it and scanned every letter of the day for
        # each batch planned: a 1M-título plan got slower with every letter (bench/).
        Index("ix_letter_status_queue", "status", "layout", "as_of", "id"),
        # The letters in a state of some customers: the last letter sent to each, a batch of
        # customers at a time, beside `cobranca titles`. Without it, a database without
        # statistics read every sent letter for each batch: 1M títulos took 219 s, not 28.
        Index("ix_letter_status_customer", "status", "customer_code", "customer_store"),
        # A customer's letters, whatever their state (`history list --customer`): without it,
        # every letter was read (3.8 s on the history of one 1M-título run). Without the status,
        # so that a letter's changes of state leave it alone. A database may take it for
        # planning's look-up (PostgreSQL does where customers have few letters): with the day
        # in it, that reads the day's letters only, as the unique key does.
        Index("ix_letter_customer", "customer_code", "customer_store", "as_of"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("cobranca_runs.id"), index=True)
    layout: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[date] = mapped_column(Date)
    customer_code: Mapped[str] = mapped_column(String(16))
    customer_store: Mapped[str] = mapped_column(String(8))
    customer_name: Mapped[str] = mapped_column(String(120))
    recipients: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255))
    titles_digest: Mapped[str] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    needs_print: Mapped[bool] = mapped_column(Boolean, default=False)
    operator: Mapped[str] = mapped_column(String(255), default="")  # who asked, if by hand
    # Provenance: the rule that selected it and the templates that rendered it.
    rule: Mapped[str] = mapped_column(Text, default="")
    templates_digest: Mapped[str] = mapped_column(String(64), default="")
    # The message exactly as handed to the transport, to be re-read years later.
    raw_message: Mapped[str] = mapped_column(Text, default="")
    server_reply: Mapped[str] = mapped_column(Text, default="")
    total: Mapped[Decimal] = mapped_column(Money)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    holder: Mapped[str] = mapped_column(String(255), default="")
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    titles: Mapped[list[LetterTitleRecord]] = relationship(
        back_populates="letter", cascade="all, delete-orphan", order_by="LetterTitleRecord.id"
    )


class LetterTitleRecord(Base):
    __tablename__ = "cobranca_letter_titles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("cobranca_letters.id"), index=True)
    title_key: Mapped[str] = mapped_column(String(80), index=True)
    recno: Mapped[int] = mapped_column(Integer)
    real_due_date: Mapped[date] = mapped_column(Date)
    days_late: Mapped[int] = mapped_column(Integer)
    value: Mapped[Decimal] = mapped_column(Money)
    balance: Mapped[Decimal] = mapped_column(Money)

    letter: Mapped[LetterRecord] = relationship(back_populates="titles")


class LetterEventRecord(Base):
    """The audit log: every state a letter went through (and every other recorded act), with
    why and who, each row chained to the previous one by a SHA-256 hash (tamper evidence)."""

    __tablename__ = "cobranca_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    letter_id: Mapped[int | None] = mapped_column(
        ForeignKey("cobranca_letters.id"), index=True, nullable=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ResponseRecord(Base):
    """What a customer did about a letter or a título, recorded by finance."""

    __tablename__ = "cobranca_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_code: Mapped[str] = mapped_column(String(16), index=True)
    customer_store: Mapped[str] = mapped_column(String(8))
    title_key: Mapped[str | None] = mapped_column(String(80), nullable=True)  # None: all
    letter_id: Mapped[int | None] = mapped_column(ForeignKey("cobranca_letters.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    promised_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    proof: Mapped[str] = mapped_column(Text, default="")
    operator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    closed_by: Mapped[str] = mapped_column(String(255), default="")
    close_note: Mapped[str] = mapped_column(Text, default="")


class CheckpointRecord(Base):
    """Where the audit chain starts after a purge: the last purged event's seq and hash."""

    __tablename__ = "cobranca_chain_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    purged_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChainHeadRecord(Base):
    """The last link of the audit chain: appending updates it first, which serializes writers."""

    __tablename__ = "cobranca_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


GENESIS = "0" * 64


@dataclass(frozen=True)
class LetterOutcome:
    """What happened to one claimed letter, written back in one statement."""

    status: LetterStatus
    reason: str = ""
    sent_at: datetime | None = None
    server_reply: str = ""
    needs_print: bool = False


@dataclass(frozen=True)
class ClaimedLetter:
    """A letter this process now holds for sending: what the deliver step needs to know."""

    id: int
    layout: str
    as_of: date
    customer_code: str
    customer_store: str
    message_id: str
    recnos: tuple[int, ...]


@dataclass(frozen=True)
class PlanEntry:
    """One letter to record as planned (or print-needed), as the plan decided it."""

    letter: PlannedLetter
    message_id: str
    transport: str
    status: LetterStatus
    reason: str = ""
    operator: str = ""
    rule: str = ""
    templates_digest: str = ""


@dataclass(frozen=True)
class RecordedPlan:
    """What recording one planned letter did: its id, and whether this call recorded it.

    ``recorded`` is False when today's letter to that customer existed already and was left as
    it was; ``status`` is then that letter's (a letter still *planned* is one an earlier run
    left for later: the delivery that follows sends it, so it is not "already claimed").
    """

    letter_id: int
    recorded: bool
    status: LetterStatus


@dataclass(frozen=True)
class LetterFinish:
    """A claimed letter's outcome, with what it carried once rendered (subject, títulos, copy)."""

    letter_id: int
    outcome: LetterOutcome
    subject: str | None = None
    titles: Sequence[Title] | None = None
    raw_message: str | None = None
    actor: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


ACTIVE_SLOT = "running"


class HistoryStore:
    """All reads and writes of the history database go through here."""

    def __init__(self, url: str | URL, engine: Engine | None = None):
        url = make_url(url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = engine or create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._create_schema()

    def _create_schema(self) -> None:
        """Create missing tables; a process racing another one to do it retries, not fails."""
        self._check_version()
        for attempt in range(5):
            try:
                Base.metadata.create_all(self.engine)
                # create_all adds indexes only with new tables: a history made by an earlier
                # release gets the ones added since (an index changes no data).
                for index in LetterRecord.__table__.indexes:
                    index.create(self.engine, checkfirst=True)
                self._drop_superseded_indexes()
                self._compress_messages_with_lz4()
                with Session(self.engine) as session, session.begin():
                    if session.get(SchemaRecord, SCHEMA_VERSION) is None:
                        session.add(SchemaRecord(version=SCHEMA_VERSION))
                    if session.get(ChainHeadRecord, 1) is None:
                        session.add(ChainHeadRecord(id=1, seq=0, hash=GENESIS))
                return
            except (ProgrammingError, IntegrityError, OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _drop_superseded_indexes(self) -> None:
        """Only those present: opening a history must not need DDL rights (auditors)."""
        present = {
            index["name"] for index in inspect(self.engine).get_indexes(LetterRecord.__tablename__)
        }
        superseded = [name for name in SUPERSEDED_INDEXES if name in present]
        if superseded:
            with self.engine.begin() as connection:
                for name in superseded:
                    connection.execute(text(f"DROP INDEX IF EXISTS {name}"))

    def _compress_messages_with_lz4(self) -> None:
        """PostgreSQL 14 and later: stored messages (~35 KB each) compressed with lz4.

        The default, pglz, cost a tenth of a whole run's time at 100k títulos (bench/README.md).
        Only a history not yet switched is altered, and a server built without lz4 or a role
        without the right to alter the table keeps pglz: nothing else changes.
        """
        if self.engine.dialect.name != "postgresql" or (
            self.engine.dialect.server_version_info or (0,)
        ) < (14,):
            return
        with self.engine.connect() as connection:
            method = connection.scalar(text(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = 'cobranca_letters'::regclass AND attname = 'raw_message'"
            ))  # fmt: skip
        if method == "l":
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(text(
                    "ALTER TABLE cobranca_letters ALTER COLUMN raw_message SET COMPRESSION lz4"
                ))  # fmt: skip
        except (NotSupportedError, ProgrammingError) as exc:
            reason = str(exc.orig).strip().splitlines()[0]
            log.info("history: stored messages stay compressed with pglz: %s", reason)

    def _check_version(self) -> None:
        """Refuse a history written by another schema version; wait out one being created.

        Another process creating the schema right now shows tables without their version
        row for a moment: that is a new database, not the first release's (no version table).
        """
        for attempt in range(10):
            tables = set(inspect(self.engine).get_table_names())
            if "cobranca_letters" not in tables:
                return  # a new database
            if "cobranca_schema" in tables:
                with self.engine.connect() as connection:
                    found = connection.scalar(select(func.max(SchemaRecord.version)))
                if found is not None:
                    break
            elif "cobranca_chain_head" not in tables:
                found = 1  # the first release had neither a version table nor a chain
                break
            time.sleep(0.1 * (attempt + 1))  # being created by another process
        else:
            return  # still being created after seconds: create_all below finishes it
        if found != SCHEMA_VERSION:
            raise HistorySchemaError(
                f"the history database {self.engine.url.render_as_string(hide_password=True)} "
                f"has schema version {found}, this cobranca needs {SCHEMA_VERSION}: keep the "
                "old database for the record and point history.url at a new one"
            )

    def close(self) -> None:
        self.engine.dispose()

    # --- runs -------------------------------------------------------------------------------

    def start_run(self, layout: str, as_of: date, trigger: str, config_digest: str) -> int:
        with Session(self.engine) as session, session.begin():
            run = RunRecord(
                layout=layout,
                as_of=as_of,
                trigger=trigger,
                worker=this_worker(),
                config_digest=config_digest,
                started_at=utcnow(),
                status="running",
            )
            session.add(run)
            session.flush()
            return run.id

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: dict[str, int],
        skip_reasons: dict[str, int],
        error: str = "",
    ) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(RunRecord)
                .where(RunRecord.id == run_id)
                .values(
                    status=status,
                    finished_at=utcnow(),
                    skipped=sum(skip_reasons.values()),
                    skip_reasons=json.dumps(skip_reasons, sort_keys=True),
                    error=error,
                    **counts,
                )
            )

    # --- run slots (the scheduler's ledger) ---------------------------------------------------

    def claim_slot(self, layout: str, as_of: date, *, stale_after: timedelta) -> bool:
        """Take today's scheduled run of a layout; False when it ran or is running elsewhere.

        A slot that failed, or whose holder died (or has been silent past ``stale_after``),
        may be taken again: a run is retried, never lost, and never run twice at once.
        """
        now = utcnow()
        try:
            with Session(self.engine) as session, session.begin():
                session.add(
                    RunSlotRecord(
                        layout=layout,
                        as_of=as_of,
                        status=ACTIVE_SLOT,
                        attempts=1,
                        holder=this_worker(),
                        updated_at=now,
                    )
                )
            return True
        except IntegrityError:
            pass
        with Session(self.engine) as session, session.begin():
            slot = session.scalars(
                select(RunSlotRecord).where(
                    RunSlotRecord.layout == layout, RunSlotRecord.as_of == as_of
                )
            ).one()
            if slot.status == "finished":
                return False
            if slot.status == ACTIVE_SLOT and not _holder_gone(
                slot.holder, slot.updated_at, stale_after
            ):
                return False
            taken = session.execute(
                update(RunSlotRecord)
                .where(
                    RunSlotRecord.id == slot.id,
                    RunSlotRecord.status == slot.status,
                    RunSlotRecord.holder == slot.holder,
                    RunSlotRecord.attempts == slot.attempts,
                )
                .values(
                    status=ACTIVE_SLOT,
                    holder=this_worker(),
                    updated_at=now,
                    attempts=slot.attempts + 1,
                    error="",
                )
            ).rowcount
            return taken == 1

    def finish_slot(self, layout: str, as_of: date, *, ok: bool, error: str = "") -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(RunSlotRecord)
                .where(
                    RunSlotRecord.layout == layout,
                    RunSlotRecord.as_of == as_of,
                    RunSlotRecord.holder == this_worker(),
                )
                .values(status="finished" if ok else "failed", updated_at=utcnow(), error=error)
            )

    def slot(self, layout: str, as_of: date) -> RunSlotRecord | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(
                select(RunSlotRecord).where(
                    RunSlotRecord.layout == layout, RunSlotRecord.as_of == as_of
                )
            ).one_or_none()

    # --- letters ----------------------------------------------------------------------------

    def last_letters(self, layout: str, since: date, before: date) -> dict[tuple[str, str], date]:
        """Customer → latest as-of date (in [since, before)) of a letter that counts for cadence.

        The day's own letters are left to the unique key, so a rerun reports them as already
        planned or sent today rather than as a cadence skip.
        """
        statement = select(
            LetterRecord.customer_code, LetterRecord.customer_store, LetterRecord.as_of
        ).where(
            LetterRecord.layout == layout,
            LetterRecord.as_of >= since,
            LetterRecord.as_of < before,
            LetterRecord.status.in_([s.value for s in CADENCE_STATUSES]),
        )
        latest: dict[tuple[str, str], date] = {}
        with self.engine.connect() as connection:
            for code, store, as_of in connection.execute(statement):
                key = (code, store)
                if key not in latest or as_of > latest[key]:
                    latest[key] = as_of
        return latest

    def letters_of_day(self, layout: str, as_of: date) -> set[tuple[str, str]]:
        """Customers who already have this layout's letter for that day (a failed one aside)."""
        statement = select(LetterRecord.customer_code, LetterRecord.customer_store).where(
            LetterRecord.layout == layout,
            LetterRecord.as_of == as_of,
            LetterRecord.status != LetterStatus.FAILED_TEMPORARY.value,
        )
        with self.engine.connect() as connection:
            return {(code, store) for code, store in connection.execute(statement)}

    def record_plans(self, run_id: int, entries: Sequence[PlanEntry]) -> list[RecordedPlan]:
        """Record planned letters in one transaction; what became of each, in order.

        A letter that failed temporarily earlier today is planned again in the same row, so it
        is retried; any other existing letter (planned, sending, sent, ambiguous...) stays. If
        another process records one of the same letters meanwhile, the batch is done again one
        letter at a time, so the unique key decides each letter on its own.
        """
        if not entries:
            return []
        try:
            with Session(self.engine) as session, session.begin():
                return self._record_plans(session, run_id, entries)
        except IntegrityError:
            if len(entries) == 1:  # lost a race for this very letter: it exists now
                with Session(self.engine) as session, session.begin():
                    return self._record_plans(session, run_id, entries)
            return [self.record_plans(run_id, [entry])[0] for entry in entries]

    def _record_plans(
        self, session: Session, run_id: int, entries: Sequence[PlanEntry]
    ) -> list[RecordedPlan]:
        letters = LetterRecord.__table__
        now = utcnow()
        first = entries[0].letter
        customers = sorted({(e.letter.customer.code, e.letter.customer.store) for e in entries})
        existing: dict[tuple[str, str], tuple[int, str]] = {}
        for start in range(0, len(customers), _LOOKUP_CHUNK):
            statement, params = existing_letters_statement(
                first.layout, first.as_of, customers[start : start + _LOOKUP_CHUNK]
            )
            for letter_id, code, store, status in session.execute(statement, params):
                existing[(code, store)] = (letter_id, status)
        fresh: list[dict[str, Any]] = []  # letters new today, inserted together below
        # Per entry: its id (-1 while waiting for the insert), and None or the status of the
        # letter found in its place.
        decided: list[tuple[int, str | None]] = []
        again: dict[int, str] = {}  # letter id → the reason it was planned again
        for entry in entries:
            letter = entry.letter
            assert (letter.layout, letter.as_of) == (first.layout, first.as_of)
            values = {
                "run_id": run_id,
                "customer_name": letter.customer.name[:120],
                "recipients": ", ".join(letter.recipients),
                "subject": "",
                "message_id": entry.message_id,
                "titles_digest": titles_digest(letter),
                "transport": entry.transport,
                "status": entry.status.value,
                "reason": entry.reason,
                "needs_print": entry.status is LetterStatus.PRINT_NEEDED,
                "operator": entry.operator,
                "rule": entry.rule,
                "templates_digest": entry.templates_digest,
                "total": letter.total,
                "updated_at": now,
                "holder": "",
                "claimed_at": None,
                "sent_at": now if entry.status is LetterStatus.PRINTED else None,
            }
            found = existing.get((letter.customer.code, letter.customer.store))
            if found is None:
                fresh.append({
                    **values, "layout": letter.layout, "as_of": letter.as_of,
                    "customer_code": letter.customer.code, "customer_store": letter.customer.store,
                    "created_at": now, "raw_message": "", "server_reply": "", "attempts": 0,
                })  # fmt: skip
                decided.append((-1, None))
            elif found[1] == LetterStatus.FAILED_TEMPORARY.value:
                letter_id = session.execute(
                    update(LetterRecord)
                    .where(
                        LetterRecord.id == found[0],
                        LetterRecord.status == LetterStatus.FAILED_TEMPORARY.value,
                    )
                    .values(**values)
                    .returning(LetterRecord.id)
                ).scalar_one_or_none()
                if letter_id is None:  # another process changed it since it was looked up
                    status = session.execute(
                        select(LetterRecord.status).where(LetterRecord.id == found[0])
                    ).scalar_one()
                    decided.append((found[0], status))
                else:
                    decided.append((letter_id, None))
                    again[letter_id] = f"planned again: {entry.reason}".rstrip(": ")
            else:
                decided.append(found)
        # Each new id is matched to its letter by the customer (the batch's layout and day are
        # one): asking for the ids in the order given made SQLite insert one row at a time.
        inserted: dict[tuple[str, str], int] = {}
        if fresh:
            returning = letters.insert().returning(
                letters.c.id, letters.c.customer_code, letters.c.customer_store
            )
            for letter_id, code, store in session.execute(returning, fresh):
                inserted[(code, store)] = letter_id
        recorded: list[RecordedPlan] = []
        titles: dict[int, Sequence[Title]] = {}
        events: list[tuple[int, LetterStatus, str, str | None]] = []
        for entry, (letter_id, existing) in zip(entries, decided, strict=True):
            if existing is not None:
                recorded.append(RecordedPlan(letter_id, False, LetterStatus(existing)))
                continue
            if letter_id == -1:
                letter_id = inserted[(entry.letter.customer.code, entry.letter.customer.store)]
            recorded.append(RecordedPlan(letter_id, True, entry.status))
            titles[letter_id] = entry.letter.titles
            reason = again.get(letter_id, entry.reason)
            events.append((letter_id, entry.status, reason, entry.operator or None))
        _replace_titles(session, titles)
        _log_many(session, events)
        return recorded

    def record_manual(
        self,
        run_id: int,
        letter: PlannedLetter,
        status: LetterStatus,
        operator: str,
        message_id: str,
        transport: str,
        reason: str = "",
        rule: str = "",
        templates_digest: str = "",
    ) -> RecordedPlan:
        """A letter made by hand (desk `send` or `print`), recorded with who asked for it."""
        entry = PlanEntry(letter, message_id, transport, status, reason or f"by hand: {operator}",
                          operator, rule, templates_digest)  # fmt: skip
        return self.record_plans(run_id, [entry])[0]

    def mark_printed(self, letter_id: int, operator: str, file: str) -> bool:
        """A letter waiting for paper was printed (by whom, into which file)."""
        reason = f"printed by {operator} into {file}"
        with Session(self.engine) as session, session.begin():
            changed = session.execute(
                update(LetterRecord)
                .where(
                    LetterRecord.id == letter_id,
                    or_(
                        LetterRecord.status == LetterStatus.PRINT_NEEDED.value,
                        and_(
                            LetterRecord.status == LetterStatus.FAILED_PERMANENT.value,
                            LetterRecord.needs_print.is_(True),
                        ),
                    ),
                )
                .values(
                    status=LetterStatus.PRINTED.value,
                    reason=reason,
                    needs_print=False,
                    sent_at=utcnow(),
                    updated_at=utcnow(),
                )
            ).rowcount
            if changed:
                _log(session, letter_id, LetterStatus.PRINTED, reason, operator)
            return changed == 1

    def supersede_planned(self, layout: str, before: date) -> int:
        """Letters planned for an earlier day and never sent give way to today's plan."""
        with Session(self.engine) as session, session.begin():
            ids = list(
                session.scalars(
                    select(LetterRecord.id).where(
                        LetterRecord.layout == layout,
                        LetterRecord.as_of < before,
                        LetterRecord.status == LetterStatus.PLANNED.value,
                    )
                )
            )
            reason = f"superseded by the run of {before.isoformat()}"
            for letter_id in ids:
                changed = session.execute(
                    update(LetterRecord)
                    .where(
                        LetterRecord.id == letter_id,
                        LetterRecord.status == LetterStatus.PLANNED.value,
                    )
                    .values(status=LetterStatus.SKIPPED.value, reason=reason, updated_at=utcnow())
                ).rowcount
                if changed:
                    _log(session, letter_id, LetterStatus.SKIPPED, reason)
            return len(ids)

    def has_planned(self, layout: str, as_of: date) -> bool:
        """Whether a letter of a layout and day is still waiting to be sent."""
        with self.engine.connect() as connection:
            first = connection.scalar(_planned_letters(1), {"layout": layout, "as_of": as_of})
            return first is not None

    def claim_batch(self, layout: str, as_of: date, limit: int) -> list[ClaimedLetter]:
        """Up to ``limit`` of the oldest letters of a layout and day still planned, claimed.

        Several senders share a run: on PostgreSQL the rows are picked ``FOR UPDATE SKIP
        LOCKED``, so each sender takes different letters instead of queueing behind another's;
        on SQLite (one writer at a time) the guarded update decides, and a sender that lost
        every letter it picked picks again. An empty list: none is left.
        """
        pick, params = _planned_letters(limit, claim=True), {"layout": layout, "as_of": as_of}
        while True:
            with Session(self.engine) as session, session.begin():
                letter_ids = list(session.scalars(pick, params))
                if not letter_ids:
                    return []
                claimed = self._claim(session, letter_ids)
            if claimed:
                return claimed

    def claim_for_sending(self, letter_id: int) -> ClaimedLetter | None:
        """planned → sending, atomically: of several processes, exactly one gets the letter."""
        with Session(self.engine) as session, session.begin():
            claimed = self._claim(session, [letter_id])
        return claimed[0] if claimed else None

    def _claim(self, session: Session, letter_ids: Sequence[int]) -> list[ClaimedLetter]:
        """planned → sending for those still planned, inside the caller's transaction."""
        statements = _claim_statements()
        taken = session.execute(
            statements.claim,
            {"ids": in_values(letter_ids), "holder": this_worker(), "now": utcnow()},
        ).all()
        if not taken:
            return []
        recnos: dict[int, list[int]] = {row.id: [] for row in taken}
        for letter_id, recno in session.execute(statements.recnos, {"ids": in_values(recnos)}):
            recnos[letter_id].append(recno)
        taken = sorted(taken, key=lambda row: row.id)
        _log_many(session, [(row.id, LetterStatus.SENDING, "", None) for row in taken])
        return [
            ClaimedLetter(
                id=row.id,
                layout=row.layout,
                as_of=row.as_of,
                customer_code=row.customer_code,
                customer_store=row.customer_store,
                message_id=row.message_id,
                recnos=tuple(recnos[row.id]),
            )
            for row in taken
        ]

    def release(self, letter_ids: Sequence[int], reason: str) -> int:
        """Claimed letters this process will not try after all go back to planned, untried."""
        if not letter_ids:
            return 0
        with Session(self.engine) as session, session.begin():
            released = session.scalars(
                update(LetterRecord)
                .where(
                    LetterRecord.id.in_(letter_ids),
                    LetterRecord.status == LetterStatus.SENDING.value,
                    LetterRecord.holder == this_worker(),
                )
                .values(
                    status=LetterStatus.PLANNED.value,
                    reason=reason,
                    holder="",
                    claimed_at=None,
                    updated_at=utcnow(),
                    attempts=LetterRecord.attempts - 1,
                )
                .returning(LetterRecord.id)
            ).all()
            _log_many(session, [(i, LetterStatus.PLANNED, reason, None) for i in sorted(released)])
            return len(released)

    def finish_letters(self, finishes: Sequence[LetterFinish]) -> None:
        """Write the outcomes of a batch of letters in one transaction.

        A letter's título rows are rewritten only where they changed since the plan.
        """
        if not finishes:
            return
        now = utcnow()
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}  # same columns: one executemany
        new_titles: dict[int, Sequence[Title]] = {}
        for finish in finishes:
            outcome = finish.outcome
            values: dict[str, Any] = {
                "status": outcome.status.value,
                "reason": outcome.reason,
                "sent_at": outcome.sent_at,
                "server_reply": outcome.server_reply,
                "needs_print": outcome.needs_print,
                "updated_at": now,
            }
            if outcome.status is LetterStatus.PLANNED:
                values.update(holder="", claimed_at=None)
            if finish.subject is not None:
                values["subject"] = finish.subject
            if finish.raw_message is not None:
                values["raw_message"] = finish.raw_message
            if finish.titles is not None:
                values["total"] = sum((t.net_balance for t in finish.titles), Decimal("0.00"))
                new_titles[finish.letter_id] = finish.titles
            row = {f"new_{name}": value for name, value in values.items()}
            shapes.setdefault(tuple(values), []).append({"letter_id": finish.letter_id, **row})
        with Session(self.engine) as session, session.begin():
            for columns, rows in shapes.items():
                session.execute(_finish_statement(columns), rows)
            _replace_titles(session, new_titles, only_changed=True)
            _log_many(
                session,
                [(f.letter_id, f.outcome.status, f.outcome.reason, f.actor) for f in finishes],
            )

    def note_planned(self, layout: str, as_of: date, reason: str) -> int:
        """Say on every letter still planned why it has not gone yet (SMTP down, max reached)."""
        with Session(self.engine) as session, session.begin():
            return session.execute(
                update(LetterRecord)
                .where(
                    LetterRecord.layout == layout,
                    LetterRecord.as_of == as_of,
                    LetterRecord.status == LetterStatus.PLANNED.value,
                )
                .values(reason=reason, updated_at=utcnow())
            ).rowcount

    def stale_sending(self, stale_after: timedelta) -> list[LetterRecord]:
        """Letters left in 'sending' by a process that died (or went silent too long)."""
        with Session(self.engine, expire_on_commit=False) as session:
            candidates = session.scalars(
                select(LetterRecord).where(LetterRecord.status == LetterStatus.SENDING.value)
            ).all()
            return [r for r in candidates if _holder_gone(r.holder, r.claimed_at, stale_after)]

    def resolve_stale(self, letter_id: int, holder: str, outcome: LetterOutcome) -> bool:
        """sending → outcome, only if still held by that (dead) holder."""
        with Session(self.engine) as session, session.begin():
            changed = session.execute(
                update(LetterRecord)
                .where(
                    LetterRecord.id == letter_id,
                    LetterRecord.holder == holder,
                    LetterRecord.status == LetterStatus.SENDING.value,
                )
                .values(
                    status=outcome.status.value,
                    reason=outcome.reason,
                    sent_at=outcome.sent_at,
                    updated_at=utcnow(),
                    holder="",
                )
            ).rowcount
            if changed:
                _log(session, letter_id, outcome.status, outcome.reason)
            return changed == 1

    def resolve(
        self, letter_id: int, status: LetterStatus, reason: str, actor: str,
        allowed: Sequence[LetterStatus],
    ) -> bool:  # fmt: skip
        """A person's decision on a letter: sent after all, or to be sent again.

        A letter marked sent keeps, as its sending time, when its last attempt was claimed.
        """
        with Session(self.engine) as session, session.begin():
            record = session.get(LetterRecord, letter_id)
            if record is None or record.status not in {s.value for s in allowed}:
                return False
            values: dict[str, Any] = {"status": status.value, "reason": reason,
                                      "updated_at": utcnow(), "holder": ""}  # fmt: skip
            if status is LetterStatus.SENT:
                values["sent_at"] = record.claimed_at or utcnow()
            else:
                values["claimed_at"] = None
            changed = session.execute(
                update(LetterRecord)
                .where(LetterRecord.id == letter_id, LetterRecord.status == record.status)
                .values(values)
            ).rowcount
            if changed:
                _log(session, letter_id, status, reason, actor)
            return changed == 1

    # --- customer responses -------------------------------------------------------------------

    def add_response(self, response: ResponseRecord) -> int:
        with Session(self.engine) as session, session.begin():
            response.created_at = utcnow()
            session.add(response)
            session.flush()
            append_event(
                session, kind="response", status=response.kind, reason=response.note,
                actor=response.operator, letter_id=response.letter_id,
                payload=_response_snapshot(response),
            )  # fmt: skip
            return response.id

    def close_response(self, response_id: int, operator: str, note: str) -> ResponseRecord | None:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            response = session.get(ResponseRecord, response_id)
            if response is None or response.closed_at is not None:
                return None
            response.closed_at, response.closed_by, response.close_note = utcnow(), operator, note
            session.flush()
            append_event(
                session, kind="response", status="closed", reason=note, actor=operator,
                letter_id=response.letter_id, payload=_response_snapshot(response),
            )  # fmt: skip
            return response

    def responses(self, *, customer: str | None = None, kind: str | None = None,
                  open_only: bool | None = None) -> list[ResponseRecord]:  # fmt: skip
        statement = select(ResponseRecord).order_by(ResponseRecord.id)
        if customer:
            code, _, store = customer.partition("/")
            statement = statement.where(ResponseRecord.customer_code == code)
            if store:
                statement = statement.where(ResponseRecord.customer_store == store)
        if kind:
            statement = statement.where(ResponseRecord.kind == kind)
        if open_only is True:
            statement = statement.where(ResponseRecord.closed_at.is_(None))
        elif open_only is False:
            statement = statement.where(ResponseRecord.closed_at.is_not(None))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(statement))

    def suspensions(
        self, as_of: date, grace_days: int, codes: Iterable[str] | None = None
    ) -> dict[tuple[str, str], list[tuple[str | None, str]]]:
        """Customer → (título key or None for all, why) that must not get a letter on as_of.

        An open dispute or payment claim suspends until closed; a promise until its date plus
        the grace period (then, if unpaid, it is broken and the ladder resumes). ``codes``
        narrows the read to those customer codes (a batch's, instead of every open response).
        """
        statement = _open_suspending_responses(codes is not None)
        params = {} if codes is None else {"codes": in_values(sorted(set(codes)))}
        suspended: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
        with self.engine.connect() as connection:
            for r in connection.execute(statement, params):
                if r.kind == "promise":
                    assert r.promised_date is not None
                    until = r.promised_date + timedelta(days=grace_days)
                    if as_of > until:
                        continue
                    why = f"promise to pay by {r.promised_date.isoformat()} (response {r.id})"
                else:
                    why = f"{r.kind.replace('_', ' ')} open (response {r.id})"
                key = (r.customer_code, r.customer_store)
                suspended.setdefault(key, []).append((r.title_key, why))
        return suspended

    # --- retention ----------------------------------------------------------------------------

    def purge(self, before: datetime, operator: str) -> dict[str, int]:
        """Delete what is older than ``before`` while keeping the audit chain verifiable.

        The chain is cut at its longest prefix of events older than ``before``; only letters
        whose every event lies in that prefix go (a letter still touched later stays until a
        later purge). The cut's seq and hash become the checkpoint verification starts from,
        and the purge itself is appended to the chain, so the checkpoint cannot be moved quietly.
        """
        with Session(self.engine) as session, session.begin():
            first_kept = session.scalar(
                select(func.min(LetterEventRecord.seq)).where(LetterEventRecord.at >= before)
            )
            last_seq = session.scalar(select(func.max(LetterEventRecord.seq))) or 0
            cut = (first_kept - 1) if first_kept is not None else last_seq
            if cut <= 0:
                return {"events": 0, "letters": 0, "responses": 0, "runs": 0}
            cut_hash = session.scalar(
                select(LetterEventRecord.hash).where(LetterEventRecord.seq == cut)
            )
            touched_later = select(LetterEventRecord.letter_id).where(
                LetterEventRecord.seq > cut, LetterEventRecord.letter_id.is_not(None)
            )
            letters = select(LetterRecord.id).where(
                LetterRecord.as_of < before.date(), LetterRecord.id.not_in(touched_later)
            )
            letter_ids = list(session.scalars(letters))
            counts = {"letters": len(letter_ids)}
            # A month of letters at company scale is more than one statement may name
            # (PostgreSQL takes 65,535 bound values, SQLite 32,766 or fewer): in chunks.
            chunks = [
                letter_ids[start : start + PURGE_CHUNK]
                for start in range(0, len(letter_ids), PURGE_CHUNK)
            ]
            for chunk in chunks:
                session.execute(
                    update(ResponseRecord)
                    .where(ResponseRecord.letter_id.in_(chunk))
                    .values(letter_id=None)
                )
            counts["responses"] = session.execute(
                delete(ResponseRecord).where(
                    ResponseRecord.closed_at.is_not(None), ResponseRecord.closed_at < before
                )
            ).rowcount
            counts["events"] = session.execute(
                delete(LetterEventRecord).where(LetterEventRecord.seq <= cut)
            ).rowcount
            for chunk in chunks:
                session.execute(
                    delete(LetterTitleRecord).where(LetterTitleRecord.letter_id.in_(chunk))
                )
                session.execute(delete(LetterRecord).where(LetterRecord.id.in_(chunk)))
            kept_runs = select(LetterRecord.run_id)
            counts["runs"] = session.execute(
                delete(RunRecord).where(
                    RunRecord.started_at < before, RunRecord.id.not_in(kept_runs)
                )
            ).rowcount
            session.execute(delete(RunSlotRecord).where(RunSlotRecord.as_of < before.date()))
            session.execute(delete(CheckpointRecord))
            session.add(CheckpointRecord(id=1, seq=cut, hash=cut_hash, purged_at=utcnow()))
            append_event(
                session, kind="purge", status="purged", actor=operator,
                reason=f"records before {before.date().isoformat()} purged",
                payload={"checkpoint_seq": cut, "checkpoint_hash": cut_hash, **counts},
            )  # fmt: skip
            return counts

    def letter(self, letter_id: int) -> LetterRecord | None:
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(LetterRecord, letter_id)
            if record is not None:
                _ = record.titles
            return record

    def letters(
        self,
        *,
        run_ids: Sequence[int] = (),
        layout: str | None = None,
        status: LetterStatus | None = None,
        as_of: date | None = None,
    ) -> list[LetterRecord]:
        """Letters with their títulos, oldest first (for reports, commands and tests)."""
        # The títulos in one more query, not one per letter.
        statement = (
            select(LetterRecord)
            .options(selectinload(LetterRecord.titles))
            .order_by(LetterRecord.id)
        )
        if run_ids:
            statement = statement.where(LetterRecord.run_id.in_(run_ids))
        if layout:
            statement = statement.where(LetterRecord.layout == layout)
        if status:
            statement = statement.where(LetterRecord.status == status.value)
        if as_of is not None:
            statement = statement.where(LetterRecord.as_of == as_of)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(statement))

    def letter_list(self, status: LetterStatus, layout: str | None = None) -> Iterator[Row[Any]]:
        """Letters with a status, oldest first, as rows (id, as_of, layout, customer_code,
        customer_store, status, message_id, reason), streamed: neither message nor título is
        read, so a listing of a whole month takes as little memory as one of a day."""
        letters = _LETTERS.c
        statement = (
            select(letters.id, letters.as_of, letters.layout, letters.customer_code,
                   letters.customer_store, letters.status, letters.message_id, letters.reason)
            .where(letters.status == status.value)
            .order_by(letters.id)
        )  # fmt: skip
        if layout:
            statement = statement.where(letters.layout == layout)
        with self.engine.connect() as connection:
            yield from connection.execution_options(yield_per=1000).execute(statement)

    def events(self, letter_id: int) -> list[LetterEventRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.scalars(
                    select(LetterEventRecord)
                    .where(LetterEventRecord.letter_id == letter_id)
                    .order_by(LetterEventRecord.seq)
                )
            )

    def runs(self) -> list[RunRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(RunRecord).order_by(RunRecord.id)))


def open_existing(database: Database) -> Engine | None:
    """The history database for reading only: None while it has no letters table (nothing to
    read yet), without creating a file or a table as HistoryStore would."""
    sqlite_file = database.sqlite_file
    if sqlite_file is not None and not sqlite_file.exists():
        return None
    engine = create_engine(database.engine_url())
    if not inspect(engine).has_table(LetterRecord.__tablename__):
        engine.dispose()
        return None
    return engine


PURGE_CHUNK = 500  # letters named per statement by a purge
SQLITE_BUSY_SECONDS = 30  # how long a SQLite history waits for another process's lock


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    """Several processes share one SQLite history: wait for locks instead of failing.

    Turning a new database to WAL needs it alone, and while another process holds it (creating
    the same new history, say two senders started together) SQLite refuses at once, without
    waiting as busy_timeout does for everything else: waited for here just as long. A database
    already in WAL (every one after its first connection) is left as it is.
    """
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_SECONDS * 1000}")
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    pause = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # or an extended BUSY_*
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    cursor.close()


def _holder_gone(holder: str, since: datetime | None, stale_after: timedelta) -> bool:
    alive = holder_alive(holder) if holder else False
    if alive is not None:
        return not alive
    return since is None or utcnow() - since > stale_after


def _log(
    session: Session,
    letter_id: int,
    status: LetterStatus,
    reason: str,
    actor: str | None = None,
) -> None:
    """Record a letter's state change in the audit chain, with the letter as it now stands."""
    _log_many(session, [(letter_id, status, reason, actor)])


def _log_many(
    session: Session, changes: Sequence[tuple[int, LetterStatus, str, str | None]]
) -> None:
    """Record letters' state changes (id, status, why, who) in the audit chain, in order.

    Each event carries the letter as the database now holds it, read back in one query for the
    whole batch: what an audit later compares the row with.
    """
    if not changes:
        return
    session.flush()
    snapshots = letter_snapshots(session, [letter_id for letter_id, _, _, _ in changes])
    append_events(
        session,
        [
            {
                "kind": "letter",
                "letter_id": letter_id,
                "status": status.value,
                "reason": reason,
                "actor": actor or this_worker(),
                "payload": snapshots[letter_id],
            }
            for letter_id, status, reason, actor in changes
        ],
    )


def append_event(
    session: Session,
    *,
    kind: str,
    status: str,
    reason: str,
    actor: str,
    payload: dict[str, Any],
    letter_id: int | None = None,
) -> None:
    """Append one link to the audit chain inside the caller's transaction."""
    event_fields = {"kind": kind, "status": status, "reason": reason, "actor": actor,
                    "payload": payload, "letter_id": letter_id}  # fmt: skip
    append_events(session, [event_fields])


def append_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Append links to the audit chain inside the caller's transaction, in the order given.

    The chain head is moved first: on every database that takes the write lock (SQLite) or the
    row lock (PostgreSQL), so concurrent writers append one batch after the other, never forking.
    """
    session.flush()
    statements = _event_statements()
    seq, prev = session.execute(statements.take_seqs, {"count": len(events)}).one()
    rows = []
    for number, fields in enumerate(events, start=seq - len(events) + 1):
        row = {
            "seq": number, "kind": fields["kind"], "letter_id": fields["letter_id"],
            "at": utcnow(), "status": fields["status"], "reason": fields["reason"],
            "actor": fields["actor"], "payload": canonical(fields["payload"]), "prev_hash": prev,
        }  # fmt: skip
        row["hash"] = prev = event_hash(SimpleNamespace(**row))
        rows.append(row)
    session.execute(statements.insert, rows)
    session.execute(statements.set_hash, {"last_hash": prev})


RESPONSE_KINDS = ("promise", "dispute", "paid_claim", "new_boleto", "phone_contact")
SUSPENDING_KINDS = ("promise", "dispute", "paid_claim")


def _response_snapshot(response: ResponseRecord) -> dict[str, Any]:
    names = (
        "id", "customer_code", "customer_store", "title_key", "letter_id", "kind", "amount",
        "promised_date", "note", "proof", "operator", "closed_by", "close_note",
    )  # fmt: skip
    return {name: getattr(response, name) for name in names}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def event_hash(record: LetterEventRecord | SimpleNamespace | Row[Any]) -> str:
    """SHA-256 over the previous hash and every field of the event."""
    fields = {
        "seq": record.seq,
        "kind": record.kind,
        "letter_id": record.letter_id,
        "at": record.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "status": record.status,
        "reason": record.reason,
        "actor": record.actor,
        "payload": record.payload,
    }
    return hashlib.sha256((record.prev_hash + canonical(fields)).encode()).hexdigest()


AUDITED_FIELDS = (
    "layout", "as_of", "customer_code", "customer_store", "customer_name", "recipients",
    "subject", "message_id", "titles_digest", "transport", "status", "reason", "needs_print",
    "operator", "server_reply", "total", "sent_at", "rule", "templates_digest",
)  # fmt: skip


def letter_snapshots(session: Session, letter_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """What an auditor relies on in each letter row and its títulos, as plain JSON values: read
    in two queries whatever the number of letters."""
    wanted = {"ids": in_values(set(letter_ids))}
    letters_statement, titles_statement = _snapshot_statements()
    snapshots: dict[int, dict[str, Any]] = {}
    for row in session.execute(letters_statement, wanted):
        snapshot: dict[str, Any] = {}
        for name, value in zip(AUDITED_FIELDS, row[2:], strict=True):
            if isinstance(value, datetime):
                value = value.astimezone(UTC).isoformat(timespec="microseconds")
            snapshot[name] = str(value) if isinstance(value, Decimal | date) else value
        snapshot["titles"] = []
        snapshot["raw_message_sha256"] = hashlib.sha256(row.raw_message.encode()).hexdigest()
        snapshots[row.id] = snapshot
    for letter_id, key, balance, value in session.execute(titles_statement, wanted):
        snapshots[letter_id]["titles"].append(f"{key}={balance}/{value}")
    return snapshots


_LOOKUP_CHUNK = 100  # customers per look-up: within SQLite's 500 compound SELECTs


def existing_letters_statement(
    layout: str, as_of: date, customers: Sequence[tuple[str, str]]
) -> tuple[CompoundSelect, dict[str, Any]]:
    """The letters of a layout and day for these (code, store) customers (id, code, store,
    status): the statement and its parameters.

    One SELECT per customer on the whole unique key, joined with UNION ALL, so that each is a
    single probe of that key's index on every database, with or without statistics. Written
    as one condition (codes IN, or an OR of keys, which PostgreSQL factors back into the
    same), PostgreSQL without statistics scanned every letter of the layout and day for each
    batch planned: a 1M-título plan got slower with every letter (bench/).
    """
    params: dict[str, Any] = {"layout": layout, "as_of": as_of}
    for number, (code, store) in enumerate(customers):
        params[f"code_{number}"] = code
        params[f"store_{number}"] = store
    return _existing_letters_select(len(customers)), params


@lru_cache(maxsize=8)
def _existing_letters_select(customers: int) -> CompoundSelect:
    """Made once per number of customers, with parameters for the values: building the
    statement for every batch, and on PostgreSQL converting its new text, was a fifth of
    the plan (bench/), and the same text lets the database reuse its plan."""
    layout, as_of = bindparam("layout"), bindparam("as_of")
    return union_all(*(
        select(
            LetterRecord.id, LetterRecord.customer_code, LetterRecord.customer_store,
            LetterRecord.status,
        ).where(
            LetterRecord.layout == layout,
            LetterRecord.customer_code == bindparam(f"code_{number}"),
            LetterRecord.customer_store == bindparam(f"store_{number}"),
            LetterRecord.as_of == as_of,
        )
        for number in range(customers)
    ))  # fmt: skip


def titles_digest(letter: PlannedLetter) -> str:
    """Which títulos, at which balances, the letter was planned with."""
    text = "\n".join(f"{t.key}={t.net_balance}" for t in letter.titles)
    return hashlib.sha256(text.encode()).hexdigest()


def _title_row(letter_id: int, title: Title) -> dict[str, Any]:
    return {
        "letter_id": letter_id,
        "title_key": title.key,
        "recno": title.recno,
        "real_due_date": title.real_due_date,
        "days_late": title.days_late,
        "value": title.value,
        "balance": title.net_balance,
    }


_TITLE_FIELDS = ("title_key", "recno", "real_due_date", "days_late", "value", "balance")


def _replace_titles(
    session: Session, titles: dict[int, Sequence[Title]], *, only_changed: bool = False
) -> None:
    """Set the título rows of each letter; with ``only_changed``, leave equal lists alone."""
    if not titles:
        return
    statements = _title_statements()
    if only_changed:
        stored: dict[int, list[tuple[Any, ...]]] = {letter_id: [] for letter_id in titles}
        for row in session.execute(statements.stored, {"ids": in_values(titles)}):
            stored[row[0]].append(tuple(row[1:]))
        titles = {
            letter_id: new
            for letter_id, new in titles.items()
            if stored[letter_id]
            != [tuple(_title_row(letter_id, t)[name] for name in _TITLE_FIELDS) for t in new]
        }
        if not titles:
            return
    session.execute(statements.delete, {"ids": in_values(titles)})
    rows = [_title_row(letter_id, t) for letter_id, new in titles.items() for t in new]
    if rows:
        session.execute(statements.insert, rows)


# --- statements made once ---------------------------------------------------------------------
#
# The statements every claim, outcome and audit event runs, built once with bound parameters
# for what changes. Building them for each call (coercing every column, computing the cache
# key SQLAlchemy looks the compiled SQL up by) was most of a claim's time: 3.2 ms of a letter
# on SQLite when the SMTP transport claims letters one by one, against 0.2 ms of database work
# (bench/). The SQL is the same; Core tables, not the ORM classes: nothing here loads objects.

_LETTERS = LetterRecord.__table__
_CLAIMED = ("id", "layout", "as_of", "customer_code", "customer_store", "message_id")
_LETTER_TITLES = LetterTitleRecord.__table__
_EVENTS = LetterEventRecord.__table__
_CHAIN_HEAD = ChainHeadRecord.__table__


def _ids() -> BindParameter[Any]:
    """A list of ids, bound as ``ids`` (one parameter per id, as ``in_`` of a list does)."""
    return bindparam("ids", expanding=True)


@lru_cache(maxsize=8)
def _planned_letters(limit: int, *, claim: bool = False) -> Select[tuple[int]]:
    """The oldest ``limit`` letters of a layout and day (``layout``, ``as_of``) still planned;
    to ``claim``, rows other senders hold are skipped (PostgreSQL) instead of waited for."""
    letters = _LETTERS.c
    statement = (
        select(letters.id)
        .where(
            letters.layout == bindparam("layout"),
            letters.as_of == bindparam("as_of"),
            letters.status == LetterStatus.PLANNED.value,
        )
        .order_by(letters.id)
        .limit(limit)
    )
    return statement.with_for_update(skip_locked=True) if claim else statement


@dataclass(frozen=True)
class _ClaimStatements:
    claim: Executable  # planned → sending for ``ids``, by ``holder`` at ``now``; the claims
    recnos: Executable  # (letter id, recno) of the letters ``ids``, in their order


@lru_cache(maxsize=1)
def _claim_statements() -> _ClaimStatements:
    letters, titles = _LETTERS.c, _LETTER_TITLES.c
    now = bindparam("now", type_=UtcDateTime())
    claim = (
        update(_LETTERS)
        .where(letters.id.in_(_ids()), letters.status == LetterStatus.PLANNED.value)
        .values(
            status=LetterStatus.SENDING.value,
            holder=bindparam("holder", type_=String()),
            claimed_at=now,
            updated_at=now,
            attempts=letters.attempts + 1,
        )
        .returning(*(letters[name] for name in _CLAIMED))
    )
    recnos = (
        select(titles.letter_id, titles.recno)
        .where(titles.letter_id.in_(_ids()))
        .order_by(titles.id)
    )
    return _ClaimStatements(claim, recnos)


@dataclass(frozen=True)
class _EventStatements:
    take_seqs: Executable  # the head ``count`` links on; its (seq, hash) after that
    insert: Executable  # the events
    set_hash: Executable  # the head's hash := ``last_hash``


@lru_cache(maxsize=1)
def _event_statements() -> _EventStatements:
    head = _CHAIN_HEAD.c
    take_seqs = (
        update(_CHAIN_HEAD)
        .where(head.id == 1)
        .values(seq=head.seq + bindparam("count", type_=Integer()))
        .returning(head.seq, head.hash)
    )
    set_hash = (
        update(_CHAIN_HEAD).where(head.id == 1).values(hash=bindparam("last_hash", type_=String()))
    )
    return _EventStatements(take_seqs, _EVENTS.insert(), set_hash)


@lru_cache(maxsize=1)
def _snapshot_statements() -> tuple[Select[Any], Select[Any]]:
    """The letters ``ids`` (id, raw_message, AUDITED_FIELDS) and their títulos, in order."""
    letters, titles = _LETTERS.c, _LETTER_TITLES.c
    audited = select(letters.id, letters.raw_message, *(letters[name] for name in AUDITED_FIELDS))
    return (
        audited.where(letters.id.in_(_ids())),
        select(titles.letter_id, titles.title_key, titles.balance, titles.value)
        .where(titles.letter_id.in_(_ids()))
        .order_by(titles.letter_id, titles.title_key),
    )


@lru_cache(maxsize=2)
def _open_suspending_responses(narrowed: bool) -> Select[Any]:
    """Open responses that suspend letters: all, or those of the customer codes ``codes``."""
    responses = ResponseRecord.__table__.c
    statement = select(
        responses.id, responses.kind, responses.promised_date, responses.customer_code,
        responses.customer_store, responses.title_key,
    ).where(responses.closed_at.is_(None), responses.kind.in_(SUSPENDING_KINDS))  # fmt: skip
    if narrowed:
        statement = statement.where(responses.customer_code.in_(bindparam("codes", expanding=True)))
    return statement.order_by(responses.id)  # a customer's reasons in the order recorded


@lru_cache(maxsize=16)
def _finish_statement(columns: tuple[str, ...]) -> Executable:
    """Sets these columns of the letter ``letter_id`` to ``new_<column>`` (a finish's shape)."""
    letters = _LETTERS.c
    return (
        update(_LETTERS)
        .where(letters.id == bindparam("letter_id"))
        .values({name: bindparam(f"new_{name}") for name in columns})
    )


@dataclass(frozen=True)
class _TitleStatements:
    stored: Executable  # (letter id, *_TITLE_FIELDS) of the letters ``ids``, in their order
    delete: Executable  # the título rows of the letters ``ids``
    insert: Executable


@lru_cache(maxsize=1)
def _title_statements() -> _TitleStatements:
    titles = _LETTER_TITLES.c
    stored = (
        select(titles.letter_id, *(titles[name] for name in _TITLE_FIELDS))
        .where(titles.letter_id.in_(_ids()))
        .order_by(titles.id)
    )
    delete_titles = delete(_LETTER_TITLES).where(titles.letter_id.in_(_ids()))
    return _TitleStatements(stored, delete_titles, _LETTER_TITLES.insert())
