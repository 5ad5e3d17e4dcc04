"""`cobranca audit verify`: is the history as cobranca wrote it?

Every recorded act (a letter's state change, a person's decision) is an event chained to the
previous one by SHA-256, and each letter event carries a snapshot of the letter as it then stood.
Verification walks the chain and compares each letter row with its last snapshot, so a row
changed, removed or inserted by hand (SQL UPDATE/DELETE/INSERT) is found and named.

What it does not prove: someone with write access to the database *and* this code can rebuild a
consistent chain. Against that, keep the head (`cobranca audit head`) somewhere they cannot write:
the daemon's journal, a ticket, an e-mail to the auditors. A chain that still leads to a head
recorded elsewhere was not rewritten before that head was taken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from .history import (
    GENESIS,
    ChainHeadRecord,
    CheckpointRecord,
    HistoryStore,
    LetterEventRecord,
    LetterRecord,
    canonical,
    event_hash,
    letter_snapshots,
)

# Letters compared per round: memory stays that of one chunk, whatever the history's size (all
# of a year's letters and their last snapshots at once took gigabytes).
VERIFY_CHUNK = 500


@dataclass(frozen=True)
class AuditResult:
    events: int
    letters: int
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(history: HistoryStore) -> AuditResult:
    with Session(history.engine) as session:
        head = session.get(ChainHeadRecord, 1)
        head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
        problems = list(_chain_problems(session, head_seq, head_hash))
        letters, letter_problems = _letter_problems(session)
        problems.extend(letter_problems)
        events = session.scalar(select(func.count()).select_from(LetterEventRecord)) or 0
    return AuditResult(events, letters, head_seq, head_hash, tuple(problems))


def _chain_problems(session: Session, head_seq: int, head_hash: str) -> Iterator[str]:
    expected_seq, previous = 1, GENESIS
    checkpoint = session.get(CheckpointRecord, 1)
    if checkpoint is not None:
        # After a purge the chain starts at the checkpoint, which the purge event vouches for.
        expected_seq, previous = checkpoint.seq + 1, checkpoint.hash
        vouched = session.scalars(
            select(LetterEventRecord.payload)
            .where(LetterEventRecord.kind == "purge")
            .order_by(LetterEventRecord.seq.desc())
            .limit(1)
        ).first()
        recorded = json.loads(vouched) if vouched else {}
        if (recorded.get("checkpoint_seq"), recorded.get("checkpoint_hash")) != (
            checkpoint.seq,
            checkpoint.hash,
        ):
            yield "the purge checkpoint does not match the purge recorded in the chain"
    # Rows, not objects, streamed: the whole chain is never in memory.
    statement = select(*LetterEventRecord.__table__.c).order_by(LetterEventRecord.seq)
    for event in session.execute(statement.execution_options(yield_per=1000)):
        if event.seq > expected_seq:
            yield f"events {expected_seq}..{event.seq - 1} are missing (deleted)"
        if event.prev_hash != previous:
            yield (
                f"event {event.seq}: its link to the previous event is broken "
                "(an event before it was changed, removed or inserted)"
            )
        if event_hash(event) != event.hash:
            what = f" (letter {event.letter_id})" if event.letter_id else ""
            yield f"event {event.seq}{what} was changed after it was written"
        expected_seq, previous = event.seq + 1, event.hash
    if expected_seq - 1 != head_seq or previous != head_hash:
        if expected_seq - 1 > head_seq:
            yield f"events after {head_seq} were added outside cobranca"
        elif expected_seq - 1 < head_seq:
            yield f"events {expected_seq}..{head_seq} are missing (deleted)"
        else:
            yield "the last event does not match the chain head"


def _letter_problems(session: Session) -> tuple[int, list[str]]:
    """Each letter row must equal the snapshot its last event recorded (VERIFY_CHUNK at a time)."""
    problems: list[str] = []
    checked = after = 0
    while ids := list(
        session.scalars(
            select(LetterRecord.id)
            .where(LetterRecord.id > after)
            .order_by(LetterRecord.id)
            .limit(VERIFY_CHUNK)
        )
    ):
        checked, after = checked + len(ids), ids[-1]
        last: dict[int, str] = {}
        for letter_id, payload in session.execute(
            select(LetterEventRecord.letter_id, LetterEventRecord.payload)
            .where(LetterEventRecord.kind == "letter", LetterEventRecord.letter_id.in_(ids))
            .order_by(LetterEventRecord.seq)
        ):
            last[letter_id] = payload
        snapshots = letter_snapshots(session, ids)
        for letter_id in ids:
            recorded = last.get(letter_id)
            if recorded is None:
                problems.append(
                    f"letter {letter_id} has no event: it was inserted outside cobranca"
                )
                continue
            current = snapshots[letter_id]
            if canonical(current) != recorded:
                before = json.loads(recorded)
                fields = sorted(k for k in current.keys() | before.keys()
                                if current.get(k) != before.get(k))  # fmt: skip
                problems.append(
                    f"letter {letter_id} was changed outside cobranca: {', '.join(fields)}"
                )
    events = LetterEventRecord
    gone = (
        select(events.letter_id)
        .distinct()
        .where(
            events.kind == "letter",
            events.letter_id.is_not(None),
            ~exists().where(LetterRecord.id == events.letter_id),
        )
        .order_by(events.letter_id)
    )
    for letter_id in session.scalars(gone):
        problems.append(f"letter {letter_id} was deleted (its events remain)")
    return checked, problems


def audit_command(history: HistoryStore, action: str) -> int:
    """Print the verdict (or the head to keep elsewhere); exit 1 when the history was altered."""
    result = verify(history) if action == "verify" else None
    if result is None:
        with Session(history.engine) as session:
            head = session.get(ChainHeadRecord, 1)
        print(f"audit head: event {head.seq if head else 0} {head.hash if head else GENESIS}")
        return 0
    for problem in result.problems:
        print(f"TAMPERED: {problem}")
    verdict = "OK" if result.ok else f"FAILED ({len(result.problems)} problem(s))"
    print(f"audit {verdict}: {result.events} events, {result.letters} letters checked; "
          f"head event {result.head_seq} {result.head_hash}")  # fmt: skip
    return 0 if result.ok else 1
