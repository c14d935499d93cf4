"""SQL for the reconciler and the doctor: leader leases, stale wake-ups, expired and exhausted chunks.

Every write is conditional on the state the reconciler saw still holding, so two
reconcilers (or a reconciler and a worker) racing on the same row cannot both act.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, case, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from factory.db.models import Chunk, ChunkState, Item, ItemState, Job, JobStatus, LeaderLease, OutboxMessage

ACTIVE_CHUNK = (ChunkState.PENDING, ChunkState.RUNNING)
AWAITING_FINALIZE = (JobStatus.FINALIZING, JobStatus.CANCELLING)
BEFORE_FINALIZE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)


@dataclass(frozen=True)
class ChunkRow:
    id: str
    job_id: str
    seq: int
    queue: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    finished_at: datetime | None


def _no_active_chunk() -> ColumnElement[bool]:
    return ~exists().where(Chunk.job_id == Job.id, Chunk.state.in_(ACTIVE_CHUNK))


def _woken_before(column: SQLColumnExpression[datetime | None], before: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column < before)


class ReliabilityRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- leader lease ------------------------------------------------------
    def take_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the lease ``name``: ours already, expired, or not there yet. One winner."""
        renewed = self.session.execute(
            update(LeaderLease)
            .where(LeaderLease.name == name, or_(LeaderLease.owner == owner, LeaderLease.expires_at < now))
            .values(owner=owner, expires_at=now + ttl,
                    acquired_at=case((LeaderLease.owner == owner, LeaderLease.acquired_at), else_=now))
            .returning(LeaderLease.name)
        ).first()
        if renewed is not None:
            return True
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        inserted = self.session.execute(
            dialect.insert(LeaderLease)
            .values(name=name, owner=owner, acquired_at=now, expires_at=now + ttl)
            .on_conflict_do_nothing(index_elements=[LeaderLease.name])
            .returning(LeaderLease.name)
        ).first()
        return inserted is not None

    def release_lease(self, name: str, owner: str, now: datetime) -> None:
        """Let another instance take over at once (on a clean stop)."""
        self.session.execute(update(LeaderLease).where(LeaderLease.name == name, LeaderLease.owner == owner)
                             .values(expires_at=now))

    def lease(self, name: str) -> LeaderLease | None:
        return self.session.get(LeaderLease, name, populate_existing=True)

    # --- outbox ------------------------------------------------------------
    def unsent_outbox_ids(self, created_before: datetime, limit: int) -> list[str]:
        return list(self.session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.created_at < created_before)
            .order_by(OutboxMessage.created_at).limit(limit)
        ))

    def unsent_outbox(self) -> tuple[int, datetime | None]:
        count, oldest = self.session.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.sent_at.is_(None))
        ).one()
        return int(count), oldest

    # --- chunks ------------------------------------------------------------
    def _chunk_rows(self, *where: ColumnElement[bool], limit: int,
                    order: SQLColumnExpression[Any] | None = None) -> list[ChunkRow]:
        rows = self.session.execute(
            select(Chunk.id, Chunk.job_id, Chunk.seq, Job.queue, Chunk.attempts, Chunk.lease_owner,
                   Chunk.lease_expires_at, Chunk.last_error, Chunk.finished_at)
            .join(Job, Job.id == Chunk.job_id).where(*where)
            .order_by(order if order is not None else Chunk.id).limit(limit)
        )
        return [ChunkRow(*row) for row in rows]

    def expired_chunks(self, now: datetime, limit: int, max_attempts: int | None = None) -> list[ChunkRow]:
        """Running chunks whose holder stopped renewing the lease (killed, frozen, cut off)."""
        where = [Chunk.state == ChunkState.RUNNING, Chunk.lease_expires_at < now]
        if max_attempts is not None:
            where.append(Chunk.attempts < max_attempts)
        return self._chunk_rows(*where, limit=limit, order=Chunk.lease_expires_at)

    def requeue_expired(self, chunk_id: str, now: datetime, error: str) -> bool:
        """Running with an expired lease -> pending with a fresh wake-up time; False if that changed meanwhile."""
        done = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == ChunkState.RUNNING, Chunk.lease_expires_at < now)
            .values(state=ChunkState.PENDING, lease_owner=None, lease_expires_at=None, last_error=error,
                    enqueued_at=now)
            .returning(Chunk.id)
        ).first()
        return done is not None

    def _exhausted(self, max_attempts: int, now: datetime) -> ColumnElement[bool]:
        idle = or_(Chunk.state == ChunkState.PENDING,
                   and_(Chunk.state == ChunkState.RUNNING, Chunk.lease_expires_at < now))
        return and_(Chunk.attempts >= max_attempts, idle)

    def exhausted_chunks(self, max_attempts: int, now: datetime, limit: int) -> list[ChunkRow]:
        """Chunks nobody may claim again (attempts used up) and nobody is running."""
        return self._chunk_rows(self._exhausted(max_attempts, now), limit=limit)

    def dead_letter(self, chunk_id: str, max_attempts: int, now: datetime, reason: str) -> bool:
        done = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, self._exhausted(max_attempts, now))
            .values(state=ChunkState.FAILED, lease_owner=None, lease_expires_at=None, last_error=reason,
                    finished_at=now)
            .returning(Chunk.id)
        ).first()
        return done is not None

    def fail_pending_items(self, chunk_id: str, reason: str, now: datetime) -> int:
        result = self.session.execute(
            update(Item).where(Item.chunk_id == chunk_id, Item.state == ItemState.PENDING)
            .values(state=ItemState.FAILED, error=reason, finished_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def waiting_counts(self, woken_before: datetime) -> dict[str, int]:
        """Per queue: pending chunks and jobs awaiting finalization whose latest wake-up is older than given."""
        counts: dict[str, int] = {}
        chunk_rows = self.session.execute(
            select(Job.queue, func.count()).join(Chunk, Chunk.job_id == Job.id)
            .where(Chunk.state == ChunkState.PENDING, _woken_before(Chunk.enqueued_at, woken_before))
            .group_by(Job.queue)
        )
        job_rows = self.session.execute(
            select(Job.queue, func.count()).where(*self._awaiting_finalize(woken_before)).group_by(Job.queue)
        )
        for queue, n in [*chunk_rows, *job_rows]:
            counts[queue] = counts.get(queue, 0) + int(n)
        return counts

    def waiting_chunk_ids(self, queue: str, woken_before: datetime) -> list[str]:
        return list(self.session.scalars(
            select(Chunk.id).join(Job, Job.id == Chunk.job_id)
            .where(Job.queue == queue, Chunk.state == ChunkState.PENDING,
                   _woken_before(Chunk.enqueued_at, woken_before))
            .order_by(Chunk.id)
        ))

    def mark_chunk_enqueued(self, chunk_id: str, now: datetime, woken_before: datetime) -> bool:
        """Stamp a new wake-up, only if the chunk is still pending with an old one (one reconciler wins)."""
        done = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == ChunkState.PENDING,
                   _woken_before(Chunk.enqueued_at, woken_before))
            .values(enqueued_at=now).returning(Chunk.id)
        ).first()
        return done is not None

    # --- jobs --------------------------------------------------------------
    def _awaiting_finalize(self, requested_before: datetime) -> list[ColumnElement[bool]]:
        return [Job.status.in_(AWAITING_FINALIZE), Job.finished_at.is_(None), _no_active_chunk(),
                _woken_before(Job.finalize_requested_at, requested_before)]

    def jobs_awaiting_finalize(self, queue: str, requested_before: datetime) -> list[str]:
        return list(self.session.scalars(
            select(Job.id).where(Job.queue == queue, *self._awaiting_finalize(requested_before)).order_by(Job.id)
        ))

    def mark_finalize_requested(self, job_id: str, now: datetime, requested_before: datetime) -> bool:
        done = self.session.execute(
            update(Job).where(Job.id == job_id, _woken_before(Job.finalize_requested_at, requested_before))
            .values(finalize_requested_at=now).returning(Job.id)
        ).first()
        return done is not None

    def jobs_never_finalized(self, limit: int) -> list[str]:
        """Jobs whose chunks all ended but that were never moved on (defensive: should not happen)."""
        return list(self.session.scalars(
            select(Job.id).where(Job.status.in_(BEFORE_FINALIZE), Job.finished_at.is_(None),
                                 Job.finalize_requested_at.is_(None), _no_active_chunk())
            .order_by(Job.id).limit(limit)
        ))

    # --- for the doctor ----------------------------------------------------
    def chunk_counts(self) -> dict[str, int]:
        rows = self.session.execute(select(Chunk.state, func.count()).group_by(Chunk.state))
        return {ChunkState(state).value: int(n) for state, n in rows}

    def expired_count(self, now: datetime) -> int:
        return int(self.session.scalar(
            select(func.count()).select_from(Chunk)
            .where(Chunk.state == ChunkState.RUNNING, Chunk.lease_expires_at < now)
        ) or 0)

    def dead_letters(self, limit: int) -> list[ChunkRow]:
        return self._chunk_rows(Chunk.state == ChunkState.FAILED, limit=limit, order=Chunk.finished_at.desc())

    def per_queue(self) -> dict[str, tuple[int, int, datetime | None]]:
        """Per queue with active chunks: (pending, running, oldest pending chunk's creation)."""
        rows = self.session.execute(
            select(Job.queue, Chunk.state, func.count(), func.min(Chunk.created_at))
            .join(Chunk, Chunk.job_id == Job.id).where(Chunk.state.in_(ACTIVE_CHUNK))
            .group_by(Job.queue, Chunk.state)
        )
        out: dict[str, tuple[int, int, datetime | None]] = {}
        for queue, state, n, oldest in rows:
            pending, running, first = out.get(queue, (0, 0, None))
            if ChunkState(state) == ChunkState.PENDING:
                pending, first = int(n), oldest
            else:
                running = int(n)
            out[queue] = (pending, running, first)
        return out

    def finalizing(self) -> tuple[int, datetime | None]:
        """Jobs whose chunks all ended and whose finalization has not finished: (count, oldest request)."""
        count, oldest = self.session.execute(
            select(func.count(), func.min(Job.finalize_requested_at))
            .where(Job.status.in_(AWAITING_FINALIZE), Job.finished_at.is_(None), _no_active_chunk())
        ).one()
        return int(count), oldest
