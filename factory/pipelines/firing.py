"""Firing a pipeline: which slot is due, and the run it writes in the same transaction as its jobs.

Exactly once per slot, by two guards that hold on SQLite and PostgreSQL alike:

- ``claim``: the firing's first write is a compare-and-set on the pipeline's ``revision``, so of
  two firings (two schedulers, a redelivered tick, "run now" racing the schedule) that read the
  same state, one goes on and the other stops before writing anything (``AlreadyFired``). The same
  guard hands each "new since the last run" file to one run: the cursor moves under it.
- the run row is unique on (pipeline, slot): a firing that got past a stale read still cannot
  write a second run for its slot; the insert fails and the caller rolls back.

Nothing commits here: the caller (the scheduler's tick, or the run-now route) commits, then publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import Pipeline, PipelineRun, PipelineRunStep
from factory.errors import FactoryError
from factory.jobs import service as jobs_service
from factory.outbox.repository import Pending
from factory.pipelines import jobspec, runs, schedule
from factory.pipelines.repository import ACTIVE, PipelineRepository
from factory.storage import ObjectStore


class AlreadyFired(Exception):
    """Another firing of this pipeline got there first: nothing was written (roll back)."""


class StartFailed(Exception):
    """The run's job could not be written (its input went away, a bad line, a quota): roll back, then
    ``record_failure`` writes the run as failed, with the files it took."""

    def __init__(self, error: FactoryError, file_ids: list[str]) -> None:
        super().__init__(error.message)
        self.error = error
        self.file_ids = file_ids


@dataclass(frozen=True)
class Slot:
    at: datetime
    trigger: str  # "schedule", "catch_up" or "manual"
    missed: int = 0  # earlier due slots this one stands for
    next_at: datetime | None = None  # the pipeline's next fire time once this one fired


@dataclass
class Fired:
    run: PipelineRun
    outbox_ids: list[str] = field(default_factory=list)
    messages: list[Pending] = field(default_factory=list)  # batch chunk messages, published without a re-read


def due(pipeline: Pipeline, now: datetime, resumed_at: datetime | None) -> Slot | None:
    """The slot to fire now, if any: the latest due one (earlier due slots are counted in ``missed``).

    Slots that came due while no scheduler ran (the first due slot is not after ``resumed_at``, when
    the running scheduler came back) are a catch-up: the pipeline's ``catch_up`` policy decides."""
    first = pipeline.next_fire_at
    if not pipeline.enabled or first is None or first > now:
        return None
    latest, count = schedule.latest_due(pipeline.schedule, first, now)
    caught_up = resumed_at is not None and first <= resumed_at
    return Slot(latest, "catch_up" if caught_up else "schedule", count - 1,
                schedule.next_after(pipeline.schedule, latest))


def fire(session: Session, settings: Settings, store: ObjectStore, pipeline: Pipeline, slot: Slot) -> Fired:
    """Write the slot's run (and its jobs, unless the policies hold it back) and move the pipeline on."""
    values = {} if slot.next_at is None else {"next_fire_at": slot.next_at}
    repo = PipelineRepository(session)
    if not repo.claim(pipeline.id, pipeline.revision, **values):
        raise AlreadyFired(pipeline.id)
    if slot.trigger == "catch_up" and pipeline.catch_up == "skip":
        run = _new_run(session, pipeline, slot, "skipped",
                       f"{slot.missed + 1} slot(s) came due while no scheduler ran; catch_up is 'skip'")
        return Fired(run)
    outbox_ids: list[str] = []
    open_runs = repo.open_runs(pipeline.id)
    for run in open_runs:
        outbox_ids += runs.settle(session, settings, run, pipeline.webhook_url) if run.status in ACTIVE else []
    active = [r for r in open_runs if r.status in ACTIVE]
    waiting = [r for r in open_runs if r.status == "waiting"]
    held = _hold(session, pipeline, slot, active, waiting)
    if held is not None:
        return Fired(held, outbox_ids)
    if pipeline.concurrency == "cancel_previous":
        outbox_ids += _cancel(session, settings, pipeline, active + waiting)
    fired = start(session, settings, store, pipeline, _new_run(session, pipeline, slot, "queued"))
    fired.outbox_ids += outbox_ids
    return fired


def _hold(session: Session, pipeline: Pipeline, slot: Slot, active: list[PipelineRun],
          waiting: list[PipelineRun]) -> PipelineRun | None:
    """The run written instead of starting one, when the previous run is still going; else None."""
    if not (active or waiting) or pipeline.concurrency == "cancel_previous":
        return None
    if pipeline.concurrency == "queue" and not waiting:
        return _new_run(session, pipeline, slot, "waiting")
    previous = (active or waiting)[-1]
    why = "a run is already waiting" if waiting else f"the previous run {previous.id} is still {previous.status}"
    return _new_run(session, pipeline, slot, "skipped", f"{why} (concurrency: {pipeline.concurrency})")


def _cancel(session: Session, settings: Settings, pipeline: Pipeline, previous: list[PipelineRun]) -> list[str]:
    outbox_ids: list[str] = []
    for run in previous:
        if run.status == "waiting":
            run.status, run.finished_at, run.error = "cancelled", utcnow(), "replaced by a newer run"
            continue
        job_ids = {j["job_id"] for j in run.jobs} | {s.job_id for s in PipelineRepository(session).steps(run.id)
                                                      if s.job_id is not None}
        for job_id in sorted(job_ids):
            try:
                outbox_ids += jobs_service.cancel_job(session, pipeline.tenant_id, job_id)[1]
            except FactoryError:  # already ending (a Conflict), or erased: nothing to stop
                continue
    return outbox_ids


def _new_run(session: Session, pipeline: Pipeline, slot: Slot, status: str, error: str | None = None) -> PipelineRun:
    run = PipelineRun(id=new_id("run"), tenant_id=pipeline.tenant_id, pipeline_id=pipeline.id, slot_at=slot.at,
                      trigger=slot.trigger, status=status, jobs=[], error=error, missed=slot.missed,
                      fired_at=utcnow(), webhook_attempts=0)
    try:
        PipelineRepository(session).add_run(run)
    except IntegrityError:
        raise AlreadyFired(pipeline.id) from None
    if status == "skipped":
        run.finished_at = run.fired_at
    return run


def start(session: Session, settings: Settings, store: ObjectStore, pipeline: Pipeline, run: PipelineRun) -> Fired:
    """Write the run's jobs, one per input file; the run is skipped when there is no input to take."""
    file_ids = pick_inputs(session, settings, pipeline)
    if not file_ids:
        run.status, run.finished_at = "skipped", utcnow()
        run.error = "no new input file since the last run" if _takes_new(pipeline) else "no input file"
        return Fired(run)
    fired = Fired(run)
    run.chain = pipeline.chain  # the run follows the steps it fired with, whatever edits come later
    repo = PipelineRepository(session)
    try:
        for lane, file_id in enumerate(file_ids):
            started = jobspec.start(session, settings, store, pipeline.tenant_id, pipeline.job["kind"],
                                    pipeline.job["request"], file_id)
            run.jobs = [*run.jobs, {"job_id": started.job_id, "batch_id": started.batch_id, "file_id": file_id}]
            repo.add_step(PipelineRunStep(id=new_id("step"), tenant_id=pipeline.tenant_id, run_id=run.id, lane=lane,
                                          step=0, kind=pipeline.job["kind"], status="queued", job_id=started.job_id,
                                          batch_id=started.batch_id, input_file_id=file_id, created_at=utcnow()))
            fired.outbox_ids += started.outbox_ids
            fired.messages += started.messages
    except FactoryError as exc:
        raise StartFailed(exc, [f for f in file_ids if f is not None]) from None
    run.status = "queued"
    _advance_cursor(session, pipeline, file_ids)
    return fired


def _takes_new(pipeline: Pipeline) -> bool:
    return (pipeline.input or {}).get("source") == "new_since_last_run"


def pick_inputs(session: Session, settings: Settings, pipeline: Pipeline) -> list[str | None]:
    """The files a run takes now ([None]: the job has no input source)."""
    source = pipeline.input
    if source is None:
        return [None]
    if source["source"] == "file":
        return [source["file_id"]]
    purpose = jobspec.KINDS[pipeline.job["kind"]].purpose
    repo = PipelineRepository(session)
    if source["source"] == "newest":
        return [f.id for f in repo.files(pipeline.tenant_id, source["prefix"], purpose, newest_first=True, limit=1)]
    after = None
    if pipeline.cursor_created_at is not None and pipeline.cursor_file_id is not None:
        after = (pipeline.cursor_created_at, pipeline.cursor_file_id)
    return [f.id for f in repo.files(pipeline.tenant_id, source["prefix"], purpose, newest_first=False,
                                     limit=settings.pipeline_max_inputs_per_run, after=after)]


def _advance_cursor(session: Session, pipeline: Pipeline, file_ids: list[str | None]) -> None:
    """Past the last file taken (under the claim: no other firing moves it meanwhile)."""
    if not _takes_new(pipeline) or not file_ids or file_ids[-1] is None:
        return
    last = PipelineRepository(session).file(pipeline.tenant_id, file_ids[-1])
    if last is not None:
        pipeline.cursor_created_at, pipeline.cursor_file_id = last.created_at, last.id


def start_waiting(session: Session, settings: Settings, store: ObjectStore, pipeline: Pipeline) -> Fired | None:
    """Concurrency "queue": start the waiting run once no run of the pipeline is queued or running."""
    open_runs = PipelineRepository(session).open_runs(pipeline.id)
    if not open_runs or any(r.status in ACTIVE for r in open_runs):
        return None
    if not PipelineRepository(session).claim(pipeline.id, pipeline.revision):
        raise AlreadyFired(pipeline.id)
    return start(session, settings, store, pipeline, open_runs[0])


def record_failure(session: Session, settings: Settings, pipeline: Pipeline, slot: Slot, failed: StartFailed,
                   run_id: str | None = None) -> Fired:
    """After ``StartFailed`` and a rollback: the run (``run_id``'s, or a new one for the slot), failed with the
    reason, and the pipeline moved on as if it had started (its "new" files count as taken, so one bad
    file does not fail every later run)."""
    repo = PipelineRepository(session)
    values = {} if slot.next_at is None else {"next_fire_at": slot.next_at}
    if not repo.claim(pipeline.id, pipeline.revision, **values):
        raise AlreadyFired(pipeline.id)
    taken = f" (input: {', '.join(failed.file_ids)})" if failed.file_ids else ""
    error = f"{failed.error.field or 'job'}: {failed.error.message}{taken}"
    run = repo.get_run(run_id) if run_id is not None else None
    if run is None:
        run = _new_run(session, pipeline, slot, "failed", error)
    run.status, run.error, run.finished_at = "failed", error, utcnow()
    _advance_cursor(session, pipeline, list(failed.file_ids))
    return Fired(run, runs.finished(session, settings, run, pipeline.webhook_url))
