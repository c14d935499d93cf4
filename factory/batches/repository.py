"""The only place with SQL for batches (and the per-line views of their items)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import case, func, select, tuple_
from sqlalchemy.orm import Session

from factory.db.models import Batch, Chunk, Item, ItemState, Job, JobStatus
from factory.jobs.repository import JobRepository


class BatchRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, batch: Batch) -> None:
        self.session.add(batch)
        self.session.flush()

    def get(self, tenant_id: str, batch_id: str) -> Batch | None:
        return self.session.scalar(select(Batch).where(Batch.id == batch_id, Batch.tenant_id == tenant_id))

    def get_with_job(self, batch_id: str) -> tuple[Batch, Job | None] | None:
        """The batch and its job read in ONE statement: under READ COMMITTED two reads could straddle
        the finalize commit and pair a finished job with a batch row that has no file ids yet."""
        row = self.session.execute(
            select(Batch, Job).outerjoin(Job, Job.id == Batch.job_id).where(Batch.id == batch_id)
            .execution_options(populate_existing=True)
        ).first()
        return None if row is None else (row[0], row[1])

    def get_by_id(self, batch_id: str) -> Batch | None:
        return self.session.get(Batch, batch_id)

    def get_by_job(self, job_id: str) -> Batch | None:
        return self.session.scalar(select(Batch).where(Batch.job_id == job_id))

    def page(self, tenant_id: str, *, after: Batch | None, limit: int) -> list[Batch]:
        """Newest first, after the cursor row; ``limit + 1`` rows tell whether there is more."""
        stmt = select(Batch).where(Batch.tenant_id == tenant_id)
        if after is not None:
            stmt = stmt.where(tuple_(Batch.created_at, Batch.id) < tuple_(after.created_at, after.id))
        stmt = stmt.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)
        return list(self.session.scalars(stmt))

    def due_for_expiry(self, now: datetime, limit: int = 100) -> list[Batch]:
        """Batches whose window passed while their job still runs, not yet told to stop."""
        return list(self.session.scalars(
            select(Batch).join(Job, Job.id == Batch.job_id)
            .where(Batch.expires_at < now, Batch.expire_requested_at.is_(None),
                   Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .order_by(Batch.expires_at).limit(limit)
        ))

    def unfinished_with_input(self, tenant_id: str, file_id: str) -> bool:
        """Whether a batch whose job has not finished reads its lines from this file."""
        return self.session.scalar(
            select(Batch.id).join(Job, Job.id == Batch.job_id)
            .where(Batch.tenant_id == tenant_id, Batch.input_file_id == file_id, Job.finished_at.is_(None))
            .limit(1)
        ) is not None

    def line_counts(self, job_id: str) -> tuple[int, int]:
        """(completed, failed) lines when lines have several items: a line counts once all its items ended."""
        per_line = (
            select(
                func.sum(case((Item.state == ItemState.PENDING, 1), else_=0)).label("pending"),
                func.sum(case((Item.state.in_([ItemState.FAILED, ItemState.CANCELLED]), 1), else_=0)).label("bad"),
            )
            .where(Item.job_id == job_id).group_by(Item.key).subquery()
        )
        row = self.session.execute(select(
            func.coalesce(func.sum(case(((per_line.c.pending == 0) & (per_line.c.bad == 0), 1), else_=0)), 0),
            func.coalesce(func.sum(case(((per_line.c.pending == 0) & (per_line.c.bad > 0), 1), else_=0)), 0),
        )).one()
        return int(row[0]), int(row[1])

    def iter_items(self, job_id: str, page: int = 1000) -> Iterator[Item]:
        """Every item of the job in submission order, read in pages to bound memory."""
        return JobRepository(self.session).iter_items(job_id, page)

    def last_chunk_finished_at(self, job_id: str) -> datetime | None:
        value = self.session.scalar(select(func.max(Chunk.finished_at)).where(Chunk.job_id == job_id))
        return value if isinstance(value, datetime) else None
