"""A run's status follows its jobs: derived from them when read, and settled (written down, with its
counts, and its webhook queued) by the scheduler once they have ended.

    waiting              behind the previous run (concurrency "queue"); no job yet
    queued / running     its jobs: all queued / any further along
    succeeded            every job succeeded (a batch with failed lines still succeeds, as a batch does)
    failed               a job failed, or the run could not start (``error`` says why)
    cancelled            a job was cancelled (concurrency "cancel_previous", or by hand)
    skipped              nothing started: the previous run was still going, no new input, or a missed slot
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.models import ItemState, Job, JobStatus, PipelineRun
from factory.jobs.repository import JobRepository
from factory.outbox.repository import OutboxRepository
from factory.pipelines.repository import PipelineRepository
from factory.pipelines.schemas import FINAL_RUN_STATUSES, RunJob, RunOut

DELIVER_RUN_WEBHOOK_TASK = "factory.deliver_pipeline_run_webhook"
NOTIFIED_STATUSES = ("succeeded", "failed", "cancelled")
_COUNTED = (ItemState.PENDING, ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELLED)


@dataclass(frozen=True)
class Live:
    status: str
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


def _status(jobs: list[Job]) -> str:
    states = [j.status for j in jobs]
    if not all(s.is_terminal for s in states):
        return "queued" if all(s == JobStatus.QUEUED for s in states) else "running"
    if JobStatus.FAILED in states:
        return "failed"
    return "cancelled" if JobStatus.CANCELLED in states else "succeeded"


def live(session: Session, run: PipelineRun) -> Live:
    """What the run is now: its stored state once final (or waiting), else derived from its jobs."""
    if run.status in FINAL_RUN_STATUSES or run.status == "waiting" or not run.jobs:
        return Live(run.status, dict(run.counts or {}), run.started_at, run.finished_at, run.error)
    jobs = list(PipelineRepository(session).jobs([j["job_id"] for j in run.jobs]).values())
    if not jobs:  # erased (DELETE /v1/files, retention): nothing left to follow
        return Live("failed", dict(run.counts or {}), run.started_at, run.finished_at, "its jobs were erased")
    repo = JobRepository(session)
    counts = {"total": sum(j.item_count for j in jobs)} | {s.value: 0 for s in _COUNTED}
    for job in jobs:
        for state, n in repo.item_counts(job.id).items():
            counts[state.value] = counts.get(state.value, 0) + n
    status = _status(jobs)
    started = [j.started_at for j in jobs if j.started_at is not None]
    finished = [j.finished_at for j in jobs if j.finished_at is not None]
    failed = [j for j in jobs if j.status == JobStatus.FAILED]
    error = (f"job {failed[0].id} failed" + (f": {failed[0].error}" if failed[0].error else "")) if failed else None
    return Live(status, counts, min(started) if started else None,
                max(finished) if finished and status in FINAL_RUN_STATUSES else None, error)


def describe(session: Session, run: PipelineRun) -> RunOut:
    now = live(session, run)
    return RunOut(id=run.id, pipeline_id=run.pipeline_id, slot_at=run.slot_at, trigger=run.trigger,
                  status=now.status, jobs=[RunJob(**j) for j in run.jobs], counts=now.counts, missed=run.missed,
                  error=now.error, fired_at=run.fired_at, started_at=now.started_at, finished_at=now.finished_at)


def settle(session: Session, settings: Settings, run: PipelineRun, webhook_url: str | None) -> list[str]:
    """Write down what the run's jobs say; when that is its end, queue its webhook. The outbox ids to
    publish after commit."""
    now = live(session, run)
    run.counts, run.started_at, run.error = now.counts, now.started_at, now.error
    if now.status == run.status:
        return []
    run.status, run.finished_at = now.status, now.finished_at
    return finished(session, settings, run, webhook_url)


def finished(session: Session, settings: Settings, run: PipelineRun, webhook_url: str | None) -> list[str]:
    """The run has just ended (or failed to start): its webhook, if it has one, goes in the outbox."""
    if run.status not in NOTIFIED_STATUSES or not webhook_url:
        return []
    return OutboxRepository(session).add_many(DELIVER_RUN_WEBHOOK_TASK, settings.queue_for_model(settings.model),
                                              [[run.id]])
