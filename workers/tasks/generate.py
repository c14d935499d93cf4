"""The tasks: generate_chunk and finalize_job. Thin and idempotent: they carry ids, the work is elsewhere.

``generate_chunk`` runs one chunk through ``workers.chunk_runner.run_chunk`` and maps its
outcome to Celery: done, skipped, lease lost or failed (its items carry the reason) end the
task; a retry re-publishes the message after a delay; a failure with an exception raises it,
so Celery records the task as failed. ``finalize_job`` runs the job kind's job-level step.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from factory.config import Settings, get_settings
from factory.db.models import Job, JobStatus
from factory.db.session import session_scope
from factory.jobs import execution
from factory.lineage import events as lineage
from factory.logs import describe_exception
from factory.pipelines import chain as pipeline_chain
from factory.queue import FINALIZE_JOB_TASK, GENERATE_CHUNK_TASK
from factory.reliability.transient import is_transient, retry_delay
from factory.storage import open_store
from workers.celery_app import app
from workers.chunk_runner import Result, relay_after_commit, run_chunk
from workers.kinds import handler_for

log = logging.getLogger(__name__)

FINALIZE_MAX_RETRIES = 5


@app.task(name=GENERATE_CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_chunk(self: Task, chunk_id: str) -> str:
    outcome = run_chunk(get_settings(), chunk_id, message_id=self.request.id, retries=self.request.retries)
    if outcome.result == Result.RETRY:
        raise self.retry(countdown=outcome.retry_after_s, exc=outcome.error)
    if outcome.error is not None:
        raise outcome.error
    return outcome.result.value


@app.task(name=FINALIZE_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def finalize_job(self: Task, job_id: str) -> str:
    """Run the kind's job-level step (exports, filters, error file, manifest), then set the final status.

    Services being away are waited out (retried with backoff, without limit); the
    kind's step failing for another reason is retried a few times, then the job fails.
    """
    settings = get_settings()
    try:
        with session_scope(settings.database_url) as session:
            job = execution.job_to_finalize(session, job_id)
            if job is None:
                return "skipped"
            outbox_ids = handler_for(job.kind).finalize(session, job, open_store(settings))
            status: Any = execution.finish_job(session, job_id)
            outbox_ids += _ended(session, settings, job, status)
    except Exception as exc:
        if is_transient(exc) or self.request.retries < FINALIZE_MAX_RETRIES:
            raise self.retry(countdown=retry_delay(self.request.retries), exc=exc) from exc
        log.error("finalizing job %s failed: %s", job_id, describe_exception(exc))
        with session_scope(settings.database_url) as session:
            status = execution.finish_job(session, job_id, error=f"finalization failed: {type(exc).__name__}")
            job = session.get(Job, job_id)
            outbox_ids = _ended(session, settings, job, status) if job is not None else []
        relay_after_commit(settings, outbox_ids)
        return "failed"
    relay_after_commit(settings, outbox_ids)  # after the final status is committed
    return f"finished:{status}"


def _ended(session: Session, settings: Settings, job: Job, status: JobStatus | None) -> list[str]:
    """What a job's end asks for, in the transaction that ends it: its final OpenLineage event (COMPLETE,
    FAIL or ABORT), and, when it is a pipeline run's step, the run's next step or its end."""
    event_type = lineage.final_event_type(status)
    outbox_ids = lineage.request(session, settings, job, event_type) if event_type else []
    return outbox_ids + pipeline_chain.on_job_finished(session, settings, open_store(settings), job, status)
