"""The only place with SQL for jobs, chunks and items.

Every query takes the tenant where user data is read through the API.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic_core import to_json
from sqlalchemy import ColumnElement, Table, bindparam, case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from factory.db.base import utcnow
from factory.db.bulk import insert_rows
from factory.db.models import Chunk, ChunkState, Item, ItemState, Job, JobStatus

# last_error of a chunk whose holder stopped renewing its lease (killed, frozen, cut off).
LEASE_EXPIRED = "lease expired: the worker was lost, stopped or cut off mid-chunk"

# The order of the tuples add_item_rows takes: JSON columns already serialised, the state as its value.
ITEM_COLUMNS = ("id", "tenant_id", "job_id", "chunk_id", "seq", "key", "variant", "record", "prompt", "request",
                "prompt_sha256", "seed", "state", "error", "finished_at")
_CHUNK_COLUMNS = ("id", "tenant_id", "job_id", "seq", "state", "attempts", "created_at", "enqueued_at",
                  "pending_lines")


def _value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def json_text(value: Any) -> str | None:
    """JSON for a JSON column. pydantic-core's serializer: ~5x faster than json.dumps,
    which matters at 50,000 items a request."""
    return None if value is None else to_json(value).decode()


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Nobody holds the chunk: pending, or running under a lease that ran out."""
    return or_(Chunk.state == ChunkState.PENDING,
               (Chunk.state == ChunkState.RUNNING) & (Chunk.lease_expires_at < now))


def _unwritten(job_id: str, states: Sequence[ChunkState]) -> tuple[ColumnElement[bool], ...]:
    """The job's chunks in ``states`` whose items were never written (``pending_lines`` still set)."""
    return Chunk.job_id == job_id, Chunk.state.in_(list(states)), Chunk.pending_lines.is_not(None)


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- writing a new job -------------------------------------------------
    def add_job(self, job: Job) -> None:
        self.session.add(job)
        self.session.flush()

    def add_chunks(self, rows: Sequence[dict[str, Any]]) -> None:
        """New pending chunks, given as dicts (a big batch has thousands: one bulk insert)."""
        insert_rows(self.session, Chunk.__table__, _CHUNK_COLUMNS,  # type: ignore[arg-type]
                    [(r["id"], r["tenant_id"], r["job_id"], r["seq"], _value(r["state"]), r["attempts"],
                      r["created_at"], r.get("enqueued_at"), json_text(r.get("pending_lines"))) for r in rows])

    def add_item_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Bulk insert of rows in ITEM_COLUMNS order: COPY on PostgreSQL, one executemany on SQLite.

        A 50,000-line batch file writes at least 50,000 items inside one request; the
        ORM's bulk insert spent most of that time on per-row bookkeeping (bench/ingest.py).
        """
        insert_rows(self.session, Item.__table__, ITEM_COLUMNS, rows)  # type: ignore[arg-type]

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

    def iter_items(self, job_id: str, page: int = 500, states: Sequence[ItemState] | None = None) -> Iterator[Item]:
        """The job's items (those in ``states``, or all) in submission order, read in pages (keyset on
        seq) to bound memory."""
        where = [Item.job_id == job_id]
        if states is not None:
            where.append(Item.state.in_(list(states)))
        last = -1
        while True:
            batch = list(self.session.scalars(
                select(Item).where(*where, Item.seq > last).order_by(Item.seq).limit(page)
            ))
            if not batch:
                return
            yield from batch
            last = batch[-1].seq

    def iter_finished_items(self, job_id: str, page: int = 500,
                            states: Sequence[ItemState] = (ItemState.SUCCEEDED, ItemState.FAILED)) -> Iterator[Item]:
        """Finished items in submission order, read in pages."""
        return self.iter_items(job_id, page, states)

    # --- worker side -------------------------------------------------------
    def claim_chunk(self, chunk_id: str, owner: str, lease: timedelta, *,
                    max_attempts: int | None = None) -> Chunk | None:
        """Take a chunk if it is pending or its lease ran out. None if finished or held by someone else.

        A single conditional UPDATE, so two deliveries of the same task cannot both win.
        A chunk that used up ``max_attempts`` is never claimed again: the reconciler
        dead-letters it.
        """
        now = utcnow()
        running = Chunk.state == ChunkState.RUNNING
        claimable = _claimable(now)
        if max_attempts is not None:
            claimable = claimable & (Chunk.attempts < max_attempts)
        claimed = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, claimable)
            .values(state=ChunkState.RUNNING, attempts=Chunk.attempts + 1, lease_owner=owner,
                    lease_expires_at=now + lease, started_at=func.coalesce(Chunk.started_at, now),
                    last_error=case((running, literal(LEASE_EXPIRED)), else_=Chunk.last_error))
            .returning(Chunk.id)
        ).first()
        if claimed is None:
            return None
        return self.session.get(Chunk, chunk_id, populate_existing=True)

    def renew_lease(self, chunk_id: str, owner: str, lease: timedelta) -> bool:
        """Push our lease forward; False if the chunk is no longer ours (finished, or taken over)."""
        renewed = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == ChunkState.RUNNING, Chunk.lease_owner == owner)
            .values(lease_expires_at=utcnow() + lease)
            .returning(Chunk.id)
        ).first()
        return renewed is not None

    def chunks_of(self, job_id: str) -> list[Chunk]:
        return list(self.session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.seq)))

    def chunk_ids(self, job_id: str) -> list[str]:
        return list(self.session.scalars(select(Chunk.id).where(Chunk.job_id == job_id).order_by(Chunk.seq)))

    def get_chunk(self, chunk_id: str) -> Chunk | None:
        return self.session.get(Chunk, chunk_id)

    def pending_items(self, chunk_id: str) -> list[Item]:
        return list(self.session.scalars(
            select(Item).where(Item.chunk_id == chunk_id, Item.state == ItemState.PENDING).order_by(Item.seq)
        ))

    def unwritten_chunks(self, job_id: str, states: Sequence[ChunkState]) -> list[Chunk]:
        """Chunks in ``states`` whose items were never written (not claimed before they ended), in order."""
        return list(self.session.scalars(select(Chunk).where(*_unwritten(job_id, states)).order_by(Chunk.seq)))

    def add_to_item_count(self, job_id: str, delta: int) -> None:
        self.session.execute(update(Job).where(Job.id == job_id).values(item_count=Job.item_count + delta))

    def unwritten_lines(self, job_id: str, states: Sequence[ChunkState]) -> list[dict[str, Any]]:
        """The ``pending_lines`` of the job's chunks in ``states`` whose items were never written."""
        return [p for p in self.session.scalars(select(Chunk.pending_lines).where(*_unwritten(job_id, states)))
                if p is not None]

    def fail_unclaimed(self, chunk_id: str, reason: str) -> bool:
        """Fail a chunk nobody holds (pending, or its lease ran out); False if it is held or ended."""
        now = utcnow()
        failed = self.session.execute(
            update(Chunk).where(Chunk.id == chunk_id, _claimable(now))
            .values(state=ChunkState.FAILED, lease_owner=None, lease_expires_at=None, last_error=reason,
                    finished_at=now)
            .returning(Chunk.id)
        ).first()
        return failed is not None

    def chunk_items(self, chunk_id: str) -> list[Item]:
        return list(self.session.scalars(select(Item).where(Item.chunk_id == chunk_id).order_by(Item.seq)))

    def save_item_outcome(self, item_id: str, *, state: ItemState, text: str | None,
                          error: str | None, provenance: dict[str, Any] | None,
                          checks: dict[str, Any] | None = None, content_sha256: str | None = None) -> None:
        """Only a pending item changes: a second delivery cannot overwrite a finished one.

        ``checks`` sets the check columns (check_status, failed_checks, fields) for kinds that check.
        """
        self.session.execute(
            update(Item).where(Item.id == item_id, Item.state == ItemState.PENDING)
            .values(state=state, text=text, error=error, provenance=provenance, finished_at=utcnow(),
                    content_sha256=content_sha256, **(checks or {}))
        )

    def save_item_outcomes(self, rows: Sequence[dict[str, Any]]) -> None:
        """A chunk's item outcomes in one statement, executed for every row (keys: ``b_id``, ``b_state``,
        ``b_text``, ``b_error``, ``b_provenance``, ``b_content_sha256``, ``b_check_status``,
        ``b_failed_checks``, ``b_fields``). Only pending items change, as in ``save_item_outcome``."""
        if not rows:
            return
        table = cast(Table, Item.__table__)
        self.session.execute(
            update(table).where(table.c.id == bindparam("b_id"), table.c.state == ItemState.PENDING)
            .values(state=bindparam("b_state"), text=bindparam("b_text"), error=bindparam("b_error"),
                    provenance=bindparam("b_provenance"), content_sha256=bindparam("b_content_sha256"),
                    check_status=bindparam("b_check_status"), failed_checks=bindparam("b_failed_checks"),
                    fields=bindparam("b_fields"), finished_at=utcnow()),
            list(rows))

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

    def release_chunk(self, chunk_id: str, owner: str, error: str | None, *, refund_attempt: bool = False) -> bool:
        """Hand a chunk back (to be retried) without waiting for its lease to expire.

        ``refund_attempt`` gives the attempt back when the cause was the infrastructure
        (database, storage, broker down), not the chunk: an outage must not dead-letter work.
        """
        attempts = Chunk.attempts - 1 if refund_attempt else Chunk.attempts
        released = self.session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == ChunkState.RUNNING, Chunk.lease_owner == owner)
            .values(state=ChunkState.PENDING, lease_owner=None, lease_expires_at=None, last_error=error,
                    attempts=attempts, enqueued_at=utcnow())
            .returning(Chunk.id)
        ).first()
        return released is not None

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

    def mark_finalize_requested(self, job_id: str, now: datetime) -> None:
        self.session.execute(update(Job).where(Job.id == job_id).values(finalize_requested_at=now))

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
