"""One frame of ``factory top``: queue depths, the workers that answer, and the jobs not ended yet.

Queues come from the doctor (database and broker counted together), workers from a
broadcast ping and the tasks each one is running (Celery's remote control: a worker
that does not answer within the timeout is not listed), jobs from the database. Rates
are the items finished since the previous frame over the time between frames; the
first frame uses each job's average since it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from factory import queue
from factory.config import Settings
from factory.db.base import utcnow
from factory.reliability import service as reliability
from factory.reliability.schemas import QueueReport
from factory.top.repository import TopRepository

FINISHED_STATES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class WorkerRow:
    name: str
    active: int  # tasks running now


@dataclass(frozen=True)
class JobRow:
    id: str
    tenant_id: str
    kind: str
    model: str
    status: str
    total: int
    finished: int
    failed: int
    started_at: datetime | None
    top_failure: tuple[str, int] | None
    rate: float | None = None  # items/s
    eta_s: float | None = None


@dataclass
class Frame:
    at: datetime
    broker_reachable: bool
    queues: list[QueueReport]
    workers: list[WorkerRow] | None  # None: the broker could not be asked
    jobs: list[JobRow] = field(default_factory=list)


def _rate(job: JobRow, now: datetime, previous: Frame | None) -> float | None:
    before = next((j for j in previous.jobs if j.id == job.id), None) if previous else None
    if before is not None and previous is not None:
        dt = (now - previous.at).total_seconds()
        return max(job.finished - before.finished, 0) / dt if dt > 0 else None
    if job.started_at is None:
        return None
    dt = (now - job.started_at).total_seconds()
    return job.finished / dt if dt > 0 else None


def collect(session: Session, settings: Settings, *, previous: Frame | None = None, jobs: int = 20,
            ping_timeout_s: float = 1.0) -> Frame:
    report = reliability.doctor(session, settings, detail=0)
    workers: list[WorkerRow] | None = None
    if report.broker_reachable:
        try:
            workers = [WorkerRow(name, active) for name, active in queue.workers(settings, ping_timeout_s)]
        except Exception:  # a broker that went away between the two reads
            workers = None
    repo = TopRepository(session)
    rows = repo.active_jobs(jobs)
    states = repo.item_states([j.id for j in rows])
    now = utcnow()
    frame = Frame(at=now, broker_reachable=report.broker_reachable, queues=report.queues, workers=workers)
    for job in rows:
        counts = states[job.id]
        row = JobRow(id=job.id, tenant_id=job.tenant_id, kind=job.kind, model=job.model, status=str(job.status.value),
                     total=job.item_count, finished=sum(counts.get(s, 0) for s in FINISHED_STATES),
                     failed=counts.get("failed", 0), started_at=job.started_at,
                     top_failure=repo.top_failure(job.id) if counts.get("failed") else None)
        rate = _rate(row, now, previous)
        eta = (row.total - row.finished) / rate if rate else None
        frame.jobs.append(JobRow(**{**row.__dict__, "rate": rate, "eta_s": eta}))
    return frame
