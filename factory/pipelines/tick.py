"""The scheduler's tick: what ``factory.pipelines.tick`` (a worker task the scheduler sends every
``FACTORY_PIPELINE_TICK_S``) does. It owns its transactions, like a task: one per pipeline, each
committed, then published (``relay``), so one pipeline's trouble neither blocks nor rolls back another's.

1. Settle: runs whose jobs have ended get their final status and counts (and their webhook queued).
2. Start the waiting run of each pipeline whose previous run ended (concurrency "queue").
3. Fire every enabled pipeline whose next slot is due (factory/pipelines/firing.py).

Pipelines created, edited or paused through the API take effect at the next tick: the database,
not the scheduler's memory, says what is due.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import utcnow
from factory.db.session import get_sessionmaker
from factory.logs import describe_exception
from factory.outbox import relay
from factory.pipelines import firing, heartbeat, runs
from factory.pipelines.firing import AlreadyFired, Fired, Slot, StartFailed
from factory.pipelines.repository import PipelineRepository
from factory.storage import ObjectStore, open_store

log = logging.getLogger(__name__)
TICK_TASK = "factory.pipelines.tick"


@dataclass
class TickReport:
    settled: int = 0
    fired: list[str] = field(default_factory=list)  # run ids written by this tick
    errors: int = 0


def publish(session: Session, settings: Settings, fired: Fired) -> None:
    """Commit, then publish what the firing queued (a batch's chunk messages without reading them back)."""
    sent = {m.id for m in fired.messages}
    relay.commit_then_publish(session, settings, [i for i in fired.outbox_ids if i not in sent])
    if fired.messages:
        relay.publish_new(session, settings, fired.messages)


def run_tick(settings: Settings, store: ObjectStore | None = None, now: datetime | None = None) -> TickReport:
    store = store or open_store(settings)
    report = TickReport()
    with get_sessionmaker(settings.database_url)() as session:
        repo = PipelineRepository(session)
        outbox_ids: list[str] = []
        for run in repo.active_runs():
            pipeline = repo.get_by_id(run.pipeline_id)
            before = run.status
            outbox_ids += runs.settle(session, settings, run, pipeline.webhook_url if pipeline else None)
            report.settled += run.status != before
        relay.commit_then_publish(session, settings, outbox_ids)
        moment = now or utcnow()
        waiting, due = repo.pipelines_with_waiting_runs(), repo.due_ids(moment)
    for pipeline_id in waiting:
        _guarded(settings, report, pipeline_id, lambda s, p: _start_waiting(s, settings, store, p))
    resumed = heartbeat.resumed_at(settings.broker_url)
    for pipeline_id in due:
        _guarded(settings, report, pipeline_id, lambda s, p: _fire_due(s, settings, store, p, moment, resumed))
    return report


def _guarded(settings: Settings, report: TickReport, pipeline_id: str,
             attempt: Callable[[Session, str], Fired | None]) -> None:
    """One pipeline in a transaction of its own, committed then published."""
    with get_sessionmaker(settings.database_url)() as session:
        try:
            fired = attempt(session, pipeline_id)
            if fired is not None:
                publish(session, settings, fired)
                report.fired.append(fired.run.id)
        except AlreadyFired:
            session.rollback()
        except Exception as exc:  # one pipeline's trouble must not stop the others; the next tick retries
            session.rollback()
            report.errors += 1
            log.warning("pipeline %s: tick failed: %s", pipeline_id, describe_exception(exc))


def _fire_due(session: Session, settings: Settings, store: ObjectStore, pipeline_id: str, now: datetime,
              resumed: datetime | None) -> Fired | None:
    pipeline = PipelineRepository(session).get_by_id(pipeline_id)
    slot = firing.due(pipeline, now, resumed) if pipeline is not None else None
    if pipeline is None or slot is None:
        return None
    try:
        return firing.fire(session, settings, store, pipeline, slot)
    except StartFailed as failed:
        return _failed(session, settings, pipeline_id, slot, failed, None)


def _start_waiting(session: Session, settings: Settings, store: ObjectStore, pipeline_id: str) -> Fired | None:
    pipeline = PipelineRepository(session).get_by_id(pipeline_id)
    if pipeline is None:
        return None
    waiting = [r.id for r in PipelineRepository(session).open_runs(pipeline_id) if r.status == "waiting"]
    try:
        return firing.start_waiting(session, settings, store, pipeline)
    except StartFailed as failed:
        return _failed(session, settings, pipeline_id, Slot(utcnow(), "schedule"), failed,
                       waiting[0] if waiting else None)


def _failed(session: Session, settings: Settings, pipeline_id: str, slot: Slot, failed: StartFailed,
            run_id: str | None) -> Fired | None:
    """The job could not be written: roll it back, then write the run as failed (firing.record_failure)."""
    session.rollback()
    pipeline = PipelineRepository(session).get_by_id(pipeline_id)
    return None if pipeline is None else firing.record_failure(session, settings, pipeline, slot, failed, run_id)
