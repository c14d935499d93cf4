"""A pipeline run's end as a signed webhook (``pipeline.run.succeeded``, ``.failed``, ``.cancelled``) to the
pipeline's ``webhook_url``, delivered by a worker task (workers/tasks/webhooks.py) after the run's final
status is committed (``runs.finished`` queues it through the outbox, in that same transaction).

Only what is the run's own lives here: the event (``prepare``, which also counts the attempt) and
where the outcome is kept (``record``). The generic flow (``factory.webhooks.delivery``) signs it,
keeps the POST outside any transaction and says when to retry.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import utcnow
from factory.pipelines.repository import PipelineRepository
from factory.pipelines.runs import NOTIFIED_STATUSES, describe_steps
from factory.webhooks import delivery as webhook_delivery
from factory.webhooks.delivery import Delivery
from factory.webhooks.signing import event


def prepare(session: Session, run_id: str) -> Delivery | None:
    """What to send for the run's end, one more attempt counted; None when there is nothing to send (no
    webhook, already delivered, not ended)."""
    repo = PipelineRepository(session)
    run = repo.get_run(run_id)
    if run is None or run.webhook_delivered_at is not None or run.status not in NOTIFIED_STATUSES:
        return None
    pipeline = repo.get_by_id(run.pipeline_id)
    if pipeline is None or not pipeline.webhook_url:
        return None
    finished = run.finished_at or utcnow()
    event_id, payload = event(f"pipeline.run.{run.status}", {
        "id": run.id, "object": "pipeline.run", "pipeline_id": pipeline.id, "pipeline": pipeline.name,
        "slot_at": int(run.slot_at.timestamp()), "trigger": run.trigger, "status": run.status, "jobs": run.jobs,
        "steps": [step.model_dump() for step in describe_steps(session, run)],
        "counts": run.counts or {}, "error": run.error}, int(finished.timestamp()))
    run.webhook_attempts += 1
    return Delivery(pipeline.webhook_url, event_id, payload)


def record(session: Session, run_id: str, error: str | None) -> None:
    """The attempt's outcome: delivered (``error`` None) or the reason it was not."""
    run = PipelineRepository(session).get_run(run_id)
    if run is None:
        return
    if error is None:
        run.webhook_delivered_at, run.webhook_last_error = utcnow(), None
    else:
        run.webhook_last_error = error


def deliver(settings: Settings, run_id: str) -> str:
    """One attempt, the POST outside any transaction; the outcome (``factory.webhooks.delivery``'s)."""
    return webhook_delivery.deliver(settings, lambda session: prepare(session, run_id),
                                    lambda session, error: record(session, run_id, error))
