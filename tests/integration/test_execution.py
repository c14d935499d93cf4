"""Chunk leasing and job finalisation rules, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from factory.config import Settings
from factory.db.base import DEFAULT_TENANT, utcnow
from factory.db.models import Chunk, ChunkState, ItemState, JobStatus
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs import service as jobs_service
from factory.jobs.repository import JobRepository
from factory.personalization import service as personalization_service
from factory.personalization.schemas import JobCreate


def _make_job(url: str, n: int = 3, chunk_size: int = 2) -> tuple[str, list[str]]:
    settings = Settings(database_url=url, chunk_size=chunk_size)
    body = JobCreate.model_validate({
        "kind": "personalization", "template": "Hello {{ name }}",
        "audience": [{"id": f"k{i}", "name": f"n{i}"} for i in range(n)], "params": {"seed": 1},
    })
    with session_scope(url) as s:
        created = personalization_service.create_job(s, settings, DEFAULT_TENANT, body)
        job_id = created.job.id
    with session_scope(url) as s:
        return job_id, JobRepository(s).chunk_ids(job_id)


def test_a_chunk_is_claimed_once_until_its_lease_expires(db_url: str) -> None:
    _job_id, chunks = _make_job(db_url)
    with session_scope(db_url) as s:
        first = execution.claim(s, chunks[0], "w1", 60)
    assert first is not None and [i.key for i in first.items] == ["k0", "k1"]
    with session_scope(db_url) as s:
        assert execution.claim(s, chunks[0], "w2", 60) is None  # held by w1
    with session_scope(db_url) as s:
        s.execute(update(Chunk).where(Chunk.id == chunks[0]).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with session_scope(db_url) as s:
        second = execution.claim(s, chunks[0], "w2", 60)
        assert second is not None and second.chunk.attempts == 2
    # w1 comes back after losing its lease: it may not close the chunk.
    with session_scope(db_url) as s:
        assert execution.complete(s, first.chunk, "w1", None) == (False, [])


def test_job_finishes_when_last_chunk_completes(db_url: str) -> None:
    job_id, chunks = _make_job(db_url, n=3, chunk_size=2)
    for n, cid in enumerate(chunks):
        with session_scope(db_url) as s:
            claimed = execution.claim(s, cid, "w", 60)
            assert claimed is not None
            for item in claimed.items:
                if item.key == "k2":
                    execution.record_failure(s, item, "boom")
                else:
                    execution.record_success(s, item, f"text {item.key}", {"seed": item.seed})
            done, outbox = execution.complete(s, claimed.chunk, "w", f"shard-{n}")
            assert done and len(outbox) == (1 if n == len(chunks) - 1 else 0)
        with session_scope(db_url) as s:
            job = jobs_service.get_job(s, DEFAULT_TENANT, job_id)
            expected = JobStatus.FINALIZING if n == len(chunks) - 1 else JobStatus.RUNNING
            assert job.status == expected
    with session_scope(db_url) as s:
        assert execution.job_to_finalize(s, job_id) is not None
        assert execution.finish_job(s, job_id) == JobStatus.SUCCEEDED
        assert execution.finish_job(s, job_id) is None  # only once
    with session_scope(db_url) as s:
        out = jobs_service.describe(s, jobs_service.get_job(s, DEFAULT_TENANT, job_id))
        assert (out.counts.succeeded, out.counts.failed, out.counts.pending) == (2, 1, 0)
        lines = list(jobs_service.iter_results(s, jobs_service.get_job(s, DEFAULT_TENANT, job_id)))
        assert [line.count('"status":"succeeded"') for line in lines] == [1, 1, 0]


def test_a_finished_item_is_never_overwritten(db_url: str) -> None:
    _job_id, chunks = _make_job(db_url, n=1)
    with session_scope(db_url) as s:
        claimed = execution.claim(s, chunks[0], "w", 60)
        assert claimed is not None
        item = claimed.items[0]
        execution.record_success(s, item, "first", {})
        execution.record_success(s, item, "second", {})
        execution.record_failure(s, item, "late failure")
    with session_scope(db_url) as s:
        items = execution.chunk_items(s, chunks[0])
        assert [(i.state, i.text, i.error) for i in items] == [(ItemState.SUCCEEDED, "first", None)]


def test_failed_chunk_sends_pending_items_to_errors(db_url: str) -> None:
    job_id, chunks = _make_job(db_url, n=2, chunk_size=2)
    with session_scope(db_url) as s:
        claimed = execution.claim(s, chunks[0], "w", 60)
        assert claimed is not None
        assert len(execution.fail_chunk(s, claimed.chunk, "w", "gave up")) == 1
    with session_scope(db_url) as s:
        assert s.get(Chunk, chunks[0]).state == ChunkState.FAILED  # type: ignore[union-attr]
        assert execution.finish_job(s, job_id) == JobStatus.FAILED
    with session_scope(db_url) as s:
        job = jobs_service.get_job(s, DEFAULT_TENANT, job_id)
        assert job.status == JobStatus.FAILED and job.finished_at is not None
        assert {i.error for i in execution.chunk_items(s, chunks[0])} == {"gave up"}


def test_cancel_then_last_running_chunk_finalizes_as_cancelled(db_url: str) -> None:
    job_id, chunks = _make_job(db_url, n=4, chunk_size=2)
    with session_scope(db_url) as s:
        running = execution.claim(s, chunks[0], "w", 60)
        assert running is not None
    with session_scope(db_url) as s:
        job, outbox = jobs_service.cancel_job(s, DEFAULT_TENANT, job_id)
        assert job.status == JobStatus.CANCELLING and outbox == []  # a chunk still runs
    with session_scope(db_url) as s:
        for item in running.items:
            execution.record_success(s, item, "kept", {})
        done, outbox = execution.complete(s, running.chunk, "w", None)
        assert done and len(outbox) == 1
    with session_scope(db_url) as s:
        assert execution.finish_job(s, job_id) == JobStatus.CANCELLED
        counts = execution.item_counts(s, job_id)
        assert (counts[ItemState.SUCCEEDED], counts[ItemState.CANCELLED]) == (2, 2)
