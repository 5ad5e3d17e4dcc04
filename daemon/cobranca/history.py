"""The history store: one row per run, per letter, and per título in a letter.

Auditors read it and the plan trusts it (cadence), so a letter is *claimed* here, under a
unique key enforced by the database, before anything is handed to a transport; its outcome is
written right after. Money is stored exactly: NUMERIC where the database has it, text on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    select,
    update,
)
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from .models import CADENCE_STATUSES, LetterStatus, PlannedLetter


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


class Base(DeclarativeBase):
    pass


class RunRecord(Base):
    __tablename__ = "cobranca_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layout: Mapped[str] = mapped_column(String(64), index=True)
    as_of: Mapped[date] = mapped_column(Date)
    trigger: Mapped[str] = mapped_column(String(16))
    config_digest: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    sent: Mapped[int] = mapped_column(Integer, default=0)
    print_needed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    skip_reasons: Mapped[str] = mapped_column(Text, default="{}")


class LetterRecord(Base):
    __tablename__ = "cobranca_letters"
    __table_args__ = (
        # The idempotency key: one letter per layout, customer and day, whoever runs it.
        UniqueConstraint("layout", "customer_code", "customer_store", "as_of", name="uq_letter"),
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
    transport: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    total: Mapped[Decimal] = mapped_column(Money)
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
    real_due_date: Mapped[date] = mapped_column(Date)
    days_late: Mapped[int] = mapped_column(Integer)
    value: Mapped[Decimal] = mapped_column(Money)
    balance: Mapped[Decimal] = mapped_column(Money)

    letter: Mapped[LetterRecord] = relationship(back_populates="titles")


@dataclass(frozen=True)
class LetterOutcome:
    """What happened to one claimed letter, written back in one statement."""

    status: LetterStatus
    reason: str = ""
    sent_at: datetime | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class HistoryStore:
    """All reads and writes of the history database go through here."""

    def __init__(self, url: str | URL, engine: Engine | None = None):
        url = make_url(url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = engine or create_engine(url, pool_pre_ping=True)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def start_run(self, layout: str, as_of: date, trigger: str, config_digest: str) -> int:
        with Session(self.engine) as session, session.begin():
            run = RunRecord(
                layout=layout,
                as_of=as_of,
                trigger=trigger,
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
        sent: int,
        print_needed: int,
        failed: int,
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
                    sent=sent,
                    print_needed=print_needed,
                    failed=failed,
                    skipped=sum(skip_reasons.values()),
                    skip_reasons=json.dumps(skip_reasons, sort_keys=True),
                    error=error,
                )
            )

    def last_letters(self, layout: str, since: date) -> dict[tuple[str, str], date]:
        """Customer → latest as-of date of a letter of this layout that counts for cadence."""
        statement = select(
            LetterRecord.customer_code, LetterRecord.customer_store, LetterRecord.as_of
        ).where(
            LetterRecord.layout == layout,
            LetterRecord.as_of >= since,
            LetterRecord.status.in_([s.value for s in CADENCE_STATUSES]),
        )
        latest: dict[tuple[str, str], date] = {}
        with self.engine.connect() as connection:
            for code, store, as_of in connection.execute(statement):
                key = (code, store)
                if key not in latest or as_of > latest[key]:
                    latest[key] = as_of
        return latest

    def claim(
        self,
        run_id: int,
        letter: PlannedLetter,
        *,
        subject: str,
        message_id: str,
        transport: str,
        status: LetterStatus,
        reason: str = "",
    ) -> int | None:
        """Record the letter before it leaves; None when another run already has it today.

        A letter that failed earlier today is taken over (its row reused) so it is retried;
        one that is being sent, was sent, or awaits printing is never claimed twice.
        """
        now = utcnow()
        values = {
            "run_id": run_id,
            "customer_name": letter.customer.name[:120],
            "recipients": ", ".join(letter.recipients),
            "subject": subject,
            "message_id": message_id,
            "transport": transport,
            "status": status.value,
            "reason": reason,
            "total": letter.total,
            "updated_at": now,
            "sent_at": None,
        }
        try:
            with Session(self.engine) as session, session.begin():
                record = LetterRecord(
                    layout=letter.layout,
                    as_of=letter.as_of,
                    customer_code=letter.customer.code,
                    customer_store=letter.customer.store,
                    created_at=now,
                    titles=list(_title_records(letter)),
                    **values,
                )
                session.add(record)
                session.flush()
                return record.id
        except IntegrityError:
            pass
        with Session(self.engine) as session, session.begin():
            key = (
                LetterRecord.layout == letter.layout,
                LetterRecord.as_of == letter.as_of,
                LetterRecord.customer_code == letter.customer.code,
                LetterRecord.customer_store == letter.customer.store,
            )
            taken = session.execute(
                update(LetterRecord)
                .where(*key, LetterRecord.status == LetterStatus.FAILED.value)
                .values(**values)
                .returning(LetterRecord.id)
            ).scalar_one_or_none()
            if taken is None:
                return None
            record = session.get_one(LetterRecord, taken)
            record.titles = list(_title_records(letter))
            return taken

    def finish_letter(self, letter_id: int, outcome: LetterOutcome) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(LetterRecord)
                .where(LetterRecord.id == letter_id)
                .values(
                    status=outcome.status.value,
                    reason=outcome.reason,
                    sent_at=outcome.sent_at,
                    updated_at=utcnow(),
                )
            )

    def letters(
        self, *, run_ids: Sequence[int] = (), layout: str | None = None
    ) -> list[LetterRecord]:
        """Letters with their títulos, oldest first (for reports and tests)."""
        statement = select(LetterRecord).order_by(LetterRecord.id)
        if run_ids:
            statement = statement.where(LetterRecord.run_id.in_(run_ids))
        if layout:
            statement = statement.where(LetterRecord.layout == layout)
        with Session(self.engine, expire_on_commit=False) as session:
            records = list(session.scalars(statement))
            for record in records:
                _ = record.titles  # load while the session is open
            return records

    def runs(self) -> list[RunRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(RunRecord).order_by(RunRecord.id)))


def _title_records(letter: PlannedLetter) -> Iterable[LetterTitleRecord]:
    for title in letter.titles:
        yield LetterTitleRecord(
            title_key=title.key,
            real_due_date=title.real_due_date,
            days_late=title.days_late,
            value=title.value,
            balance=title.net_balance,
        )
