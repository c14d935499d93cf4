"""Jobs, their chunks (the unit of work a task runs) and their items (one text each).

The database is the source of truth: a chunk row says whether work is pending,
running (under a lease) or finished; the queue only says "there is work".
Every table that holds user data carries ``tenant_id``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from factory.db.base import DEFAULT_TENANT, Base, utcnow


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings (no native PG enum): adding a state needs no type migration.
    return Enum(cls, name=name, native_enum=False, length=16,
                values_callable=lambda e: [m.value for m in e], validate_strings=True)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"  # every chunk ended; the job-level step (exports, filters) runs
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"  # cancel asked; running chunks finish, then the job finalizes
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class ChunkState(enum.StrEnum):
    PENDING = "pending"      # waiting for a worker (its wake-up is in the outbox or the broker)
    RUNNING = "running"      # claimed by a worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"        # gave up (attempts exhausted); its items are in errors
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ChunkState.SUCCEEDED, ChunkState.FAILED, ChunkState.CANCELLED)


class ItemState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    model: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(160))
    template: Mapped[str] = mapped_column(Text)
    template_sha256: Mapped[str] = mapped_column(String(64))
    system_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    variants: Mapped[int] = mapped_column(Integer)
    item_count: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    # Kind-specific job options (e.g. a batch's endpoint, checks to run), validated by the service.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    # When its finalize task was last asked for; the reconciler asks again if that
    # wake-up was lost (see factory/reliability/).
    finalize_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    chunks: Mapped[list[Chunk]] = relationship(back_populates="job", lazy="raise", order_by="Chunk.seq")


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_chunks_job_id_seq"),
        Index("ix_chunks_state_lease", "state", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[ChunkState] = mapped_column(_enum(ChunkState, "chunk_state"), default=ChunkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    storage_key: Mapped[str | None] = mapped_column(String(512), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When its latest wake-up (a generate_chunk message) was queued: at submit, when a
    # worker hands it back for a retry, when the reconciler re-enqueues it.
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Where the chunk's items come from while they are not written yet: a batch file's
    # chunk names its range of the stored input file ({"offset", "length", "line",
    # "seq", "items", "lines"}, see factory/batches/chunks.py) and the worker that
    # claims it writes its items in the claim's transaction, then clears this.
    # NULL for chunks whose items were written with the job (every other kind).
    pending_lines: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)

    job: Mapped[Job] = relationship(back_populates="chunks", lazy="raise")


class Item(Base):
    """One text to generate: a (recipient, variant) pair with its rendered prompt.

    The row is created at submit time (a batch file's: when a worker first claims its
    chunk, in the claim's transaction) and updated in place by the worker, so a
    redelivered chunk can only overwrite it, never add a second result.
    """

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "key", "variant", name="uq_items_job_id_key_variant"),
        Index("ix_items_job_id_seq", "job_id", "seq"),
        Index("ix_items_chunk_id", "chunk_id"),
        Index("ix_items_tenant_id_content_sha256", "tenant_id", "content_sha256"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    chunk_id: Mapped[str] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(256))
    variant: Mapped[int] = mapped_column(Integer)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt: Mapped[str] = mapped_column(Text)
    # Per-item generation request overriding the job's: {"messages": [...], "params": {...},
    # "stop": [...]}. None for template jobs, whose prompt + job params say everything.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    prompt_sha256: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    state: Mapped[ItemState] = mapped_column(_enum(ItemState, "item_state"), default=ItemState.PENDING)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # sha256 of ``text`` once it succeeded: where a text came from (GET /v1/provenance/lookup).
    content_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # Campaign copy: the parsed fields ({"subject", "preheader", "body"}), whether the
    # final copy passed every check ("passed" / "failed") and the checks it failed.
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    check_status: Mapped[str | None] = mapped_column(String(16), default=None)
    failed_checks: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
