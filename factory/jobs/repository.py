"""The only place with SQL for jobs, chunks and items.

Every query takes the tenant where user data is read through the API.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from factory.db.base import utcnow
from factory.db.models import Chunk, ChunkState, Item, ItemState, Job, JobStatus


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- writing a new job -------------------------------------------------
    def add_job(self, job: Job) -> None:
        self.session.add(job)
        self.session.flush()

    def add_chunks(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.session.execute(insert(Chunk), list(rows))

    def add_items(self, rows: Sequence[dict[str, Any]], batch: int = 2000) -> None:
        for start in range(0, len(rows), batch):
            self.session.execute(insert(Item), list(rows[start:start + batch]))

    # --- reading -----------------------------------------------------------
    def get(self, tenant_id: str, job_id: str) -> Job | None:
        return self.session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))

    def get_for_update(self, job_id: str) -> Job | None:
        return self.session.scalar(select(Job).where(Job.id == job_id).with_for_update())

    def item_counts(self, job_id: str) -> dict[ItemState, int]:
        rows = self.session.execute(
            select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)
        )
        return {ItemState(state): int(n) for state, n in rows}

    def iter_finished_items(self, job_id: str, page: int = 500) -> Iterator[Item]:
        """Finished items in submission order, read in pages (keyset on seq) to bound memory."""
        last = -1
        while True:
            batch = list(self.session.scalars(
                select(Item)
                .where(Item.job_id == job_id, Item.seq > last,
                       Item.state.in_([ItemState.SUCCEEDED, ItemState.FAILED]))
                .order_by(Item.seq).limit(page)
            ))
            if not batch:
                return
            yield from batch
            last = batch[-1].seq

    # --- worker side -------------------------------------------------------
    def claim_chunk(self, chunk_id: str, owner: str, lease: timedelta) -> Chunk | None:
        """Take a chunk if it is pending or its lease ran out. None if finished or held by someone else.

        A single conditional UPDATE, so two deliveries of the same task cannot both win.
        """
        now = utcnow()
        claimable = or_(
            Chunk.state == ChunkState.PENDING,
            (Chunk.state == ChunkState.RUNNING) & (Chunk.lease_expires_at < now),
        )
        claimed = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, claimable)
            .values(state=ChunkState.RUNNING, attempts=Chunk.attempts + 1, lease_owner=owner,
                    lease_expires_at=now + lease, started_at=func.coalesce(Chunk.started_at, now))
            .returning(Chunk.id)
        ).first()
        if claimed is None:
            return None
        return self.session.get(Chunk, chunk_id, populate_existing=True)

    def chunk_ids(self, job_id: str) -> list[str]:
        return list(self.session.scalars(select(Chunk.id).where(Chunk.job_id == job_id).order_by(Chunk.seq)))

    def get_chunk(self, chunk_id: str) -> Chunk | None:
        return self.session.get(Chunk, chunk_id)

    def pending_items(self, chunk_id: str) -> list[Item]:
        return list(self.session.scalars(
            select(Item).where(Item.chunk_id == chunk_id, Item.state == ItemState.PENDING).order_by(Item.seq)
        ))

    def chunk_items(self, chunk_id: str) -> list[Item]:
        return list(self.session.scalars(select(Item).where(Item.chunk_id == chunk_id).order_by(Item.seq)))

    def save_item_outcome(self, item_id: str, *, state: ItemState, text: str | None,
                          error: str | None, provenance: dict[str, Any] | None,
                          checks: dict[str, Any] | None = None) -> None:
        """Only a pending item changes: a second delivery cannot overwrite a finished one.

        ``checks`` sets the check columns (check_status, failed_checks, fields) for kinds that check.
        """
        self.session.execute(
            update(Item).where(Item.id == item_id, Item.state == ItemState.PENDING)
            .values(state=state, text=text, error=error, provenance=provenance, finished_at=utcnow(),
                    **(checks or {}))
        )

    def finish_chunk(self, chunk_id: str, owner: str, state: ChunkState, *,
                     storage_key: str | None = None, error: str | None = None) -> bool:
        """Close a chunk we still hold the lease on. False if the lease was lost meanwhile."""
        result = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == ChunkState.RUNNING, Chunk.lease_owner == owner)
            .values(state=state, storage_key=storage_key, last_error=error, finished_at=utcnow(),
                    lease_expires_at=None)
            .returning(Chunk.id)
        ).first()
        return result is not None

    def release_chunk(self, chunk_id: str, owner: str, error: str | None) -> None:
        """Hand a chunk back (to be retried) without waiting for its lease to expire."""
        self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == ChunkState.RUNNING, Chunk.lease_owner == owner)
            .values(state=ChunkState.PENDING, lease_owner=None, lease_expires_at=None, last_error=error)
        )

    def mark_job_running(self, job_id: str, now: datetime) -> None:
        self.session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=now)
        )

    def unfinished_chunk_count(self, job_id: str) -> int:
        return int(self.session.scalar(
            select(func.count()).select_from(Chunk).where(
                Chunk.job_id == job_id,
                Chunk.state.in_([ChunkState.PENDING, ChunkState.RUNNING]),
            )
        ) or 0)

    def set_job_status(self, job_id: str, status: JobStatus, finished_at: datetime | None,
                       error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": finished_at}
        if error is not None:
            values["error"] = error
        self.session.execute(update(Job).where(Job.id == job_id).values(**values))

    def request_cancel(self, job_id: str) -> None:
        self.session.execute(update(Job).where(Job.id == job_id)
                             .values(status=JobStatus.CANCELLING, cancel_requested_at=utcnow()))

    def cancel_pending(self, job_id: str) -> None:
        now = utcnow()
        self.session.execute(
            update(Chunk).where(Chunk.job_id == job_id, Chunk.state == ChunkState.PENDING)
            .values(state=ChunkState.CANCELLED, finished_at=now)
        )
        self.session.execute(
            update(Item).where(Item.job_id == job_id, Item.state == ItemState.PENDING,
                               Item.chunk_id.in_(select(Chunk.id).where(Chunk.job_id == job_id,
                                                                        Chunk.state == ChunkState.CANCELLED)))
            .values(state=ItemState.CANCELLED, finished_at=now)
        )
