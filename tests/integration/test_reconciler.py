"""The reconciler's rules against a real database (SQLite and PostgreSQL) and a real Redis broker."""

from __future__ import annotations

from datetime import timedelta

import redis
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from factory.config import Settings
from factory.db.base import DEFAULT_TENANT, utcnow
from factory.db.models import Chunk, ChunkState, Item, ItemState, Job, JobStatus, OutboxMessage
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs.repository import LEASE_EXPIRED
from factory.outbox import relay
from factory.personalization import service as personalization_service
from factory.personalization.schemas import JobCreate
from factory.queue import FINALIZE_JOB_TASK, GENERATE_CHUNK_TASK
from factory.reliability import broker
from factory.reliability import service as reliability
from factory.reliability.reconciler import Reconciler

QUEUE = "gen.smollm2-135m-instruct"


def _settings(db_url: str, broker_url: str, **kw: object) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, chunk_size=2, chunk_max_attempts=2,
                    reconcile_grace_s=0, **kw)  # type: ignore[arg-type]


def _submit(settings: Settings, n: int = 6, *, publish: bool = True) -> tuple[str, list[str]]:
    body = JobCreate.model_validate({"kind": "personalization", "template": "Hi {{ name }}",
                                     "audience": [{"id": f"k{i}", "name": f"n{i}"} for i in range(n)],
                                     "params": {"seed": 3}})
    with session_scope(settings.database_url) as s:
        created = personalization_service.create_job(s, settings, DEFAULT_TENANT, body)
    if publish:
        with session_scope(settings.database_url) as s:
            relay.relay(s, settings, created.outbox_ids)
    with session_scope(settings.database_url) as s:
        return created.job.id, list(s.scalars(select(Chunk.id).where(Chunk.job_id == created.job.id)
                                              .order_by(Chunk.seq)))


def _queued(settings: Settings) -> list[tuple[str, str]]:
    """(task, id) of every message waiting in the model's queue, oldest first."""
    client = redis.Redis.from_url(str(settings.broker_url))
    try:
        import json

        return [s for s in (broker.subject_of(json.loads(raw)) for raw in reversed(client.lrange(QUEUE, 0, -1)))
                if s is not None]
    finally:
        client.close()


def _expire(db_url: str, chunk_id: str) -> None:
    with session_scope(db_url) as s:
        s.execute(update(Chunk).where(Chunk.id == chunk_id)
                  .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_one_reconciler_leads_and_hands_over(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url, reconcile_lease_s=30)
    first, second = Reconciler(settings), Reconciler(settings)
    assert first.run_once().leader
    assert not second.run_once().leader  # the lease is held
    assert first.run_once().leader  # renewing is fine
    first.step_down()
    assert second.run_once().leader and not first.run_once().leader
    # a leader that vanished without stepping down is replaced once its lease ran out
    with session_scope(db_url) as s:
        assert reliability.take_leadership(s, "crashed", 30, now=utcnow() + timedelta(seconds=31))
    assert not second.run_once().leader


def test_unsent_outbox_messages_are_published(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url)
    rec = Reconciler(settings)
    _job, chunks = _submit(settings, publish=False)  # the API "crashed" after its commit
    assert _queued(settings) == []
    result = rec.run_once()
    assert result.outbox_sent == 3 and result.requeued_lost == 0
    assert _queued(settings) == [(GENERATE_CHUNK_TASK, c) for c in chunks]
    assert rec.run_once().outbox_sent == 0  # sent once
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))) == 0


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_pass_counts_what_it_repaired_as_metrics(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url, reconcile_lease_s=30)
    leader, standby = Reconciler(settings), Reconciler(settings)
    sent, led, stood = (_metric("factory_reconciler_repairs_total", repair="outbox_sent"),
                        _metric("factory_reconciler_passes_total", role="leader"),
                        _metric("factory_reconciler_passes_total", role="standby"))
    _submit(settings, publish=False)
    assert leader.run_once().outbox_sent == 3 and not standby.run_once().leader
    leader.step_down()
    assert _metric("factory_reconciler_repairs_total", repair="outbox_sent") == sent + 3
    assert _metric("factory_reconciler_passes_total", role="leader") == led + 1
    assert _metric("factory_reconciler_passes_total", role="standby") == stood + 1


def test_a_young_unsent_message_is_left_to_its_publisher(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url).model_copy(update={"reconcile_grace_s": 60})
    rec = Reconciler(settings)
    _submit(settings, publish=False)
    assert rec.run_once().outbox_sent == 0


def test_expired_lease_goes_back_to_pending_with_a_new_wake_up(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url)
    rec = Reconciler(settings)
    _job, chunks = _submit(settings)
    redis.Redis.from_url(broker_url).delete(QUEUE)  # consumed by the worker that then died
    with session_scope(db_url) as s:
        assert execution.claim(s, chunks[0], "w@dead:1", 60) is not None
    first = rec.run_once()
    # the chunk's lease is still valid; the other two lost their messages (queue gone): re-enqueued
    assert (first.requeued_expired, first.requeued_lost) == (0, 2)
    _expire(db_url, chunks[0])
    result = rec.run_once()
    assert (result.requeued_expired, result.requeued_lost) == (1, 0)
    with session_scope(db_url) as s:
        chunk = s.get(Chunk, chunks[0])
        assert chunk is not None
        assert (chunk.state, chunk.attempts, chunk.lease_owner, chunk.last_error) == \
            (ChunkState.PENDING, 1, None, LEASE_EXPIRED)
    assert sorted(_queued(settings)) == sorted((GENERATE_CHUNK_TASK, c) for c in chunks)
    # next claim is attempt 2
    with session_scope(db_url) as s:
        again = execution.claim(s, chunks[0], "w2", 60, max_attempts=2)
        assert again is not None and again.chunk.attempts == 2


def test_chunk_out_of_attempts_is_dead_lettered_once(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url)
    job_id, chunks = _submit(settings, n=2)  # one chunk
    a, b = Reconciler(settings), Reconciler(settings)
    for attempt in (1, 2):
        with session_scope(db_url) as s:
            claimed = execution.claim(s, chunks[0], f"w{attempt}", 60, max_attempts=2)
            assert claimed is not None and claimed.chunk.attempts == attempt
        _expire(db_url, chunks[0])
        if attempt == 1:
            assert a.run_once().requeued_expired == 1
    with session_scope(db_url) as s:  # out of attempts: nobody may claim it any more
        assert execution.claim(s, chunks[0], "w3", 60, max_attempts=2) is None
    dead = _metric("factory_dead_letters_total", source="reconciler")
    first = a.run_once()
    a.step_down()
    assert (first.dead_lettered, first.requeued_expired) == (1, 0)
    assert _metric("factory_dead_letters_total", source="reconciler") == dead + 1
    assert b.run_once().dead_lettered == 0
    reason = f"gave up after 2 attempts: {LEASE_EXPIRED}"
    with session_scope(db_url) as s:
        chunk = s.get(Chunk, chunks[0])
        assert chunk is not None and (chunk.state, chunk.last_error) == (ChunkState.FAILED, reason)
        items = list(s.scalars(select(Item).where(Item.job_id == job_id)))
        assert [(i.state, i.error) for i in items] == [(ItemState.FAILED, reason)] * 2
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.FINALIZING
    assert _queued(settings)[-1] == (FINALIZE_JOB_TASK, job_id)


def test_lost_wake_ups_are_found_by_comparing_with_the_broker(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url)
    rec = Reconciler(settings)
    _job, chunks = _submit(settings, n=8)  # four chunks, four messages
    assert rec.run_once().requeued_lost == 0  # all present
    client = redis.Redis.from_url(broker_url)
    client.rpop(QUEUE)  # the oldest message (first chunk) is lost
    result = rec.run_once()
    assert result.requeued_lost == 1
    assert sorted(_queued(settings)) == sorted((GENERATE_CHUNK_TASK, c) for c in chunks)
    client.flushdb()  # the broker lost everything
    assert rec.run_once().requeued_lost == 4
    assert rec.run_once().requeued_lost == 0
    client.close()


def test_a_recent_wake_up_is_not_counted_lost(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url).model_copy(update={"reconcile_grace_s": 60})
    rec = Reconciler(settings)
    _submit(settings)
    redis.Redis.from_url(broker_url).flushdb()
    assert rec.run_once().requeued_lost == 0  # might still be on its way


def test_lost_finalize_message_is_asked_again(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url)
    rec = Reconciler(settings)
    job_id, chunks = _submit(settings, n=2)
    with session_scope(db_url) as s:
        claimed = execution.claim(s, chunks[0], "w", 60)
        assert claimed is not None
        for item in claimed.items:
            execution.record_success(s, item, "t", {})
        done, outbox_ids = execution.complete(s, claimed.chunk, "w", None)
        assert done and len(outbox_ids) == 1
    with session_scope(db_url) as s:
        relay.relay(s, settings, outbox_ids)
    redis.Redis.from_url(broker_url).flushdb()  # the finalize message is gone
    result = rec.run_once()
    assert (result.finalize_requested, result.requeued_lost) == (1, 0)
    assert _queued(settings) == [(FINALIZE_JOB_TASK, job_id)]
    assert rec.run_once().finalize_requested == 0


def test_doctor_reports_stuck_dead_depth_lag_and_outbox(db_url: str, broker_url: str) -> None:
    settings = _settings(db_url, broker_url)
    _job, chunks = _submit(settings, n=6)
    _submit(settings, n=2, publish=False)
    with session_scope(db_url) as s:
        assert execution.claim(s, chunks[0], "w@host:1", 60) is not None
        assert execution.claim(s, chunks[1], "w@host:2", 60) is not None
        failing = execution.claim(s, chunks[2], "w@host:3", 60)
        assert failing is not None
        execution.fail_chunk(s, failing.chunk, "w@host:3", "gave up after 2 attempts: PoisonedPrompt")
    _expire(db_url, chunks[0])
    with session_scope(db_url) as s:
        report = reliability.doctor(s, settings)
    assert report.broker_reachable
    assert report.chunks == {"pending": 1, "running": 2, "failed": 1}
    assert report.stuck_chunks == 1 and [r.chunk_id for r in report.stuck] == [chunks[0]]
    assert report.dead_letters == 1 and report.dead[0].last_error == "gave up after 2 attempts: PoisonedPrompt"
    (queue,) = report.queues
    assert (queue.queue, queue.ready, queue.unacked, queue.pending_chunks, queue.running_chunks) == \
        (QUEUE, 3, 0, 1, 2)
    assert report.lag_s is not None and report.lag_s >= 0
    assert report.outbox_unsent == 1 and report.reconciler is None
    assert any("no reconciler" in p for p in report.problems)
    with session_scope(db_url) as s:
        summary = reliability.doctor(s, settings, detail=0)
    assert summary.stuck == [] and summary.dead == [] and summary.stuck_chunks == 1
