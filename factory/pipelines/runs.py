"""A run's status follows its jobs: derived from them when read, and settled (written down, with its
counts, and its webhook queued) by the scheduler once they have ended.

    waiting              behind the previous run (concurrency "queue"); no job yet
    queued / running     its jobs: all queued / any further along
    succeeded            every job succeeded (a batch with failed lines still succeeds, as a batch does)
    failed               a job failed, or the run could not start (``error`` says why)
    cancelled            a job was cancelled (concurrency "cancel_previous", or by hand)
    skipped              nothing started: the previous run was still going, no new input, or a missed slot

A chained run (factory/pipelines/chain.py) has a step row per step and input ("lane"): it succeeds once
every lane's last step succeeded, and a failed or cancelled step ends it at once, from that step's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.models import ItemState, Job, JobStatus, PipelineRun, PipelineRunStep
from factory.jobs.repository import JobRepository
from factory.outbox.repository import OutboxRepository
from factory.pipelines.repository import PipelineRepository
from factory.pipelines.schemas import FINAL_RUN_STATUSES, RunJob, RunOut, RunStep

DELIVER_RUN_WEBHOOK_TASK = "factory.deliver_pipeline_run_webhook"
NOTIFIED_STATUSES = ("succeeded", "failed", "cancelled")
STEP_FINAL = ("succeeded", "failed", "cancelled")
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


def job_counts(session: Session, jobs: list[Job]) -> dict[str, int]:
    """Items over ``jobs``: total and by state."""
    repo = JobRepository(session)
    counts = {"total": sum(j.item_count for j in jobs)} | {s.value: 0 for s in _COUNTED}
    for job in jobs:
        for state, n in repo.item_counts(job.id).items():
            counts[state.value] = counts.get(state.value, 0) + n
    return counts


def step_status(step: PipelineRunStep, jobs: dict[str, Job]) -> str:
    """A step's status: stored once final, else its job's (queued, or running once any of it started)."""
    job = jobs.get(step.job_id or "")
    if step.status in STEP_FINAL or job is None:
        return step.status
    return _status([job])


def _chain_status(run: PipelineRun, steps: list[PipelineRunStep], jobs: dict[str, Job]) -> str:
    """A chained run: failed or cancelled with its first such step; succeeded once every lane (input)
    ended its last step; else queued (nothing began) or running."""
    statuses = [step_status(s, jobs) for s in steps]
    for final in ("failed", "cancelled"):
        if final in statuses:
            return final
    last = len(run.chain or [])
    lanes = {s.lane for s in steps}
    if all(any(s.lane == lane and s.step == last and st == "succeeded" for s, st in zip(steps, statuses, strict=True))
           for lane in lanes):
        return "succeeded"
    return "queued" if all(st == "queued" for st in statuses) else "running"


def live(session: Session, run: PipelineRun) -> Live:
    """What the run is now: its stored state once final (or waiting), else derived from its jobs (a chained
    run: from its steps' jobs, and whether every lane reached its last step)."""
    if run.status in FINAL_RUN_STATUSES or run.status == "waiting" or not run.jobs:
        return Live(run.status, dict(run.counts or {}), run.started_at, run.finished_at, run.error)
    repo = PipelineRepository(session)
    steps = repo.steps(run.id) if run.chain else []
    job_ids = [s.job_id for s in steps if s.job_id] if steps else [j["job_id"] for j in run.jobs]
    by_id = repo.jobs(job_ids)
    jobs = list(by_id.values())
    if not jobs:  # erased (DELETE /v1/files, retention): nothing left to follow
        return Live("failed", dict(run.counts or {}), run.started_at, run.finished_at, "its jobs were erased")
    counts = job_counts(session, jobs)
    status = _chain_status(run, steps, by_id) if steps else _status(jobs)
    started = [j.started_at for j in jobs if j.started_at is not None]
    finished = [j.finished_at for j in jobs if j.finished_at is not None]
    failed = [j for j in jobs if j.status == JobStatus.FAILED]
    error = (f"job {failed[0].id} failed" + (f": {failed[0].error}" if failed[0].error else "")) if failed else None
    return Live(status, counts, min(started) if started else None,
                max(finished) if finished and status in FINAL_RUN_STATUSES else None, error)


def describe_steps(session: Session, run: PipelineRun) -> list[RunStep]:
    repo = PipelineRepository(session)
    steps = repo.steps(run.id)
    jobs = repo.jobs([s.job_id for s in steps if s.job_id])
    out = []
    for s in steps:
        job = jobs.get(s.job_id or "")
        counts = s.counts if s.status in STEP_FINAL or job is None else job_counts(session, [job])
        out.append(RunStep(lane=s.lane, step=s.step, kind=s.kind, status=step_status(s, jobs), job_id=s.job_id,
                           batch_id=s.batch_id, input_file_id=s.input_file_id, output_file_id=s.output_file_id,
                           counts=dict(counts or {}), error=s.error))
    return out


def describe(session: Session, run: PipelineRun) -> RunOut:
    now = live(session, run)
    return RunOut(id=run.id, pipeline_id=run.pipeline_id, slot_at=run.slot_at, trigger=run.trigger,
                  status=now.status, jobs=[RunJob(**j) for j in run.jobs], steps=describe_steps(session, run),
                  counts=now.counts, missed=run.missed, error=now.error, fired_at=run.fired_at,
                  started_at=now.started_at, finished_at=now.finished_at)


def settle(session: Session, settings: Settings, run: PipelineRun, webhook_url: str | None) -> list[str]:
    """Write down what the run's jobs say; when that is its end, queue its webhook. The outbox ids to
    publish after commit. A compare-and-set (``update_active_run``): a step's end that ended the run
    meanwhile is neither ended twice nor overwritten by this (possibly stale) view."""
    now = live(session, run)
    before = run.status
    values: dict[str, object] = {"counts": now.counts, "started_at": now.started_at, "error": now.error}
    if now.status != before:
        values |= {"status": now.status, "finished_at": now.finished_at}
    written = PipelineRepository(session).update_active_run(run.id, **values)
    session.refresh(run)
    if not written or run.status == before:
        return []
    return finished(session, settings, run, webhook_url)


def finished(session: Session, settings: Settings, run: PipelineRun, webhook_url: str | None) -> list[str]:
    """The run has just ended (or failed to start): its webhook, if it has one, goes in the outbox."""
    if run.status not in NOTIFIED_STATUSES or not webhook_url:
        return []
    return OutboxRepository(session).add_many(DELIVER_RUN_WEBHOOK_TASK, settings.queue_for_model(settings.model),
                                              [[run.id]])
