"""What the reconciler did in a pass, and what ``factory doctor`` reports."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ReconcilePass(BaseModel):
    """One pass of the reconciler. ``leader`` False: another instance holds the lease, nothing was done."""

    leader: bool
    outbox_sent: int = 0
    dead_lettered: int = 0
    requeued_expired: int = 0
    requeued_lost: int = 0
    finalize_requested: int = 0
    batches_expired: int = 0
    # Personal data and retention (factory/privacy/): jobs whose copies of a deleted file were erased,
    # files and ended jobs purged by age, objects deleted by both, expired idempotency keys.
    jobs_erased: int = 0
    files_purged: int = 0
    jobs_purged: int = 0
    objects_deleted: int = 0
    idempotency_keys_purged: int = 0
    failed_steps: list[str] = Field(default_factory=list)

    @property
    def acted(self) -> bool:
        return bool(self.outbox_sent or self.dead_lettered or self.requeued_expired or self.requeued_lost
                    or self.finalize_requested or self.batches_expired or self.jobs_erased or self.files_purged
                    or self.jobs_purged or self.objects_deleted or self.idempotency_keys_purged)


class ChunkRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    chunk_id: str
    job_id: str
    seq: int
    attempts: int
    lease_owner: str | None = None
    age_s: float | None = None  # stuck: since the lease ran out; dead letter: since it failed
    last_error: str | None = None


class QueueReport(BaseModel):
    queue: str
    ready: int | None  # messages waiting in the broker (None: broker unreachable)
    unacked: int | None  # messages taken by workers, not acknowledged yet
    pending_chunks: int
    running_chunks: int
    lag_s: float | None  # age of the oldest pending chunk


class ReconcilerReport(BaseModel):
    owner: str
    alive: bool  # its lease has not run out
    expires_in_s: float
    leader_for_s: float


class DoctorReport(BaseModel):
    generated_at: datetime
    broker_reachable: bool
    chunks: dict[str, int]
    stuck_chunks: int  # running with an expired lease: the reconciler hands them back
    stuck: list[ChunkRef]
    dead_letters: int  # failed chunks: their items are in the job's error file
    dead: list[ChunkRef]
    queues: list[QueueReport]
    lag_s: float | None  # oldest pending chunk, any queue
    outbox_unsent: int
    outbox_oldest_s: float | None
    jobs_finalizing: int
    finalizing_oldest_s: float | None
    reconciler: ReconcilerReport | None
    problems: list[str]
