"""A run's next step, started when the previous one's job ends: in the transaction that ends that job.

The worker's finalize step (``factory.finalize_job``) calls ``on_job_finished`` right after it
writes the job's final status, in the same transaction, the way it asks for the job's lineage
event. For a job that is a pipeline run's step (``pipeline_run_steps.job_id``):

- the step's final status and counts are written down (and its output file, for a batch);
- it failed or was cancelled: the run ends so at once (``failed`` / ``cancelled``, its webhook
  queued through the outbox) and no later step starts;
- it succeeded and a step follows: that step is created with this step's output as its input
  (factory/pipelines/steps.py), its job's messages in the outbox; a step that cannot be created
  (no output, a bad line) fails the run, naming ``steps[i]``, and leaves nothing of it (a savepoint);
- it was the lane's last step: the run is settled now (it ends once every lane ended).

So a step is started exactly once: the job ends once (``finish_job`` sets the final status once),
the whole of it commits or rolls back together, and (run, lane, step) is unique. The returned
outbox ids are relayed after the commit, like the rest of the finalize step's. Nothing polls: the
scheduler's tick still settles runs, as a safety net, and both end a run by a compare-and-set.
"""

from __future__ import annotations

from datetime import UTC

from sqlalchemy.orm import Session

from factory.batches.repository import BatchRepository
from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import Job, JobStatus, PipelineRun, PipelineRunStep
from factory.errors import FactoryError
from factory.pipelines import jobspec, runs, steps
from factory.pipelines.repository import ACTIVE, PipelineRepository
from factory.storage import ObjectStore


def on_job_finished(session: Session, settings: Settings, store: ObjectStore, job: Job,
                    status: JobStatus | None) -> list[str]:
    """See the module. Outbox ids to relay after the commit."""
    repo = PipelineRepository(session)
    step = repo.step_for_job(job.id) if status is not None else None
    if step is None or status is None:
        return []
    run = repo.get_run(step.run_id)
    if run is None:
        return []
    step.status, step.finished_at = status.value, utcnow()
    step.counts = runs.job_counts(session, [job])
    if step.batch_id is not None:
        batch = BatchRepository(session).get_by_job(job.id)
        step.output_file_id = batch.output_file_id if batch is not None else None
    if run.status not in ACTIVE:  # it ended meanwhile (cancelled, failed, erased): start nothing more
        return []
    pipeline = repo.get_by_id(run.pipeline_id)
    webhook_url = pipeline.webhook_url if pipeline is not None else None
    if status != JobStatus.SUCCEEDED:
        step.error = f"job {job.id} {status.value}" + (f": {job.error}" if job.error else "")
        return _end(session, settings, run, webhook_url, "failed" if status == JobStatus.FAILED else "cancelled",
                    f"steps[{step.step}]: {step.error}")
    chain = run.chain or []
    if step.step >= len(chain):
        return runs.settle(session, settings, run, webhook_url)
    try:
        with session.begin_nested():  # a step that cannot start leaves nothing of it behind
            return _start_next(session, settings, store, run, step,
                               pipeline.name if pipeline else run.pipeline_id, webhook_url)
    except FactoryError as exc:
        where = f"steps[{step.step + 1}]"
        inner = {"input.file_id": "input"}.get(exc.field or "", (exc.field or "").removeprefix("job."))
        field = f"{where}.{inner}" if inner else where  # steps[i].input: the input this step was given
        return _end(session, settings, run, webhook_url, "failed", f"{field}: {exc.message}")


def _start_next(session: Session, settings: Settings, store: ObjectStore, run: PipelineRun,
                previous: PipelineRunStep, pipeline_name: str, webhook_url: str | None) -> list[str]:
    """The lane's next step over ``previous``'s output, in this transaction; an export ends the lane."""
    index = previous.step + 1
    spec = (run.chain or [])[previous.step]
    file_id = steps.generated_id(run.id, previous.lane, index)
    slot = run.slot_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    lane = f"-{previous.lane}" if previous.lane else ""
    row = PipelineRunStep(id=new_id("step"), tenant_id=run.tenant_id, run_id=run.id, lane=previous.lane, step=index,
                          kind=spec["kind"], status="queued", created_at=utcnow())
    if spec["kind"] == "export":
        exported = steps.export(session, store, run.tenant_id, previous.kind, previous.job_id,
                                previous.output_file_id, file_id,
                                f"{spec['request']['prefix']}{pipeline_name}-{slot}{lane}.jsonl")
        row.input_file_id, row.output_file_id = previous.output_file_id, exported.id
        row.status, row.finished_at, row.counts = "succeeded", utcnow(), {"total": exported.line_count}
        PipelineRepository(session).add_step(row)
        return runs.settle(session, settings, run, webhook_url)
    source = steps.chained_batch_input(session, settings, store, run.tenant_id, previous.output_file_id,
                                       spec["body"], file_id, f"{run.id}-step{index}{lane}.jsonl")
    started = jobspec.start(session, settings, store, run.tenant_id, "batch", spec["request"], source.id)
    row.job_id, row.batch_id, row.input_file_id = started.job_id, started.batch_id, source.id
    PipelineRepository(session).add_step(row)
    return started.outbox_ids


def _end(session: Session, settings: Settings, run: PipelineRun, webhook_url: str | None, status: str,
         error: str) -> list[str]:
    """The run ends with ``status`` (a compare-and-set: if the scheduler ended it first, nothing more)."""
    now = runs.live(session, run)
    written = PipelineRepository(session).update_active_run(
        run.id, status=status, error=error, finished_at=utcnow(), counts=now.counts, started_at=now.started_at)
    session.refresh(run)
    return runs.finished(session, settings, run, webhook_url) if written else []
