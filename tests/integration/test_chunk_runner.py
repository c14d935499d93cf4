"""The chunk runner (what the generate_chunk task calls), run in the test's process on SQLite and
PostgreSQL with the fake generator: each outcome in the situation that produces it.

Faults are injected where the runner asks for its generator: one that raises (the chunk's fault),
one that lets another worker take the chunk over while it generates (the lease is lost), one that
stops the process; and around it: a database that is away at the claim, a store that is away when
the shard is written (both delay the chunk without using up an attempt).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import make_url, update
from sqlalchemy.exc import OperationalError

from factory.config import Settings
from factory.db.base import DEFAULT_TENANT
from factory.db.models import Chunk, ChunkState, ItemState, Job, JobStatus
from factory.db.session import session_scope
from factory.errors import StorageError
from factory.jobs import execution
from factory.jobs.repository import JobRepository
from factory.personalization import service as personalization_service
from factory.personalization.schemas import JobCreate
from factory.storage import close_stores, open_store
from factory.storage.keys import result_shard_key
from workers import chunk_runner, runtime
from workers.chunk_runner import Result, run_chunk
from workers.generators.base import GenerationRequest, GenerationResult, Generator


@pytest.fixture()
def settings(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    request.addfinalizer(close_stores)
    request.addfinalizer(runtime.unload_all)
    return Settings(database_url=db_url, storage_url=f"file://{tmp_path}/objects", generator="fake",
                    chunk_size=2, chunk_max_attempts=2)


def make_job(settings: Settings, n: int = 4) -> tuple[str, list[str]]:
    body = JobCreate.model_validate({"kind": "personalization", "template": "Hello {{ name }}",
                                     "audience": [{"id": f"k{i}", "name": f"n{i}"} for i in range(n)],
                                     "params": {"seed": 1}})
    with session_scope(settings.database_url) as s:
        job_id = personalization_service.create_job(s, settings, DEFAULT_TENANT, body).job.id
    with session_scope(settings.database_url) as s:
        return job_id, JobRepository(s).chunk_ids(job_id)


def chunk_row(settings: Settings, chunk_id: str) -> Chunk:
    with session_scope(settings.database_url) as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        return chunk


def test_a_chunk_runs_once_then_is_skipped_and_the_last_asks_for_finalization(settings: Settings) -> None:
    job_id, chunks = make_job(settings)
    assert run_chunk(settings, chunks[0], message_id="m1").result == Result.DONE
    first = chunk_row(settings, chunks[0])
    assert first.state == ChunkState.SUCCEEDED and first.storage_key == result_shard_key(DEFAULT_TENANT, job_id, 0)
    shard = [json.loads(x) for x in open_store(settings).get_bytes(first.storage_key).splitlines()]
    assert [(x["key"], x["status"]) for x in shard] == [("k0", "succeeded"), ("k1", "succeeded")]
    # A second delivery of the same message finds the chunk finished: nothing to do, nothing rewritten.
    assert run_chunk(settings, chunks[0], message_id="m1").result == Result.SKIPPED
    assert run_chunk(settings, chunks[1], message_id="m2").result == Result.DONE
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.FINALIZING  # the last chunk asked for it


def test_a_chunk_another_worker_holds_is_skipped(settings: Settings) -> None:
    _, chunks = make_job(settings)
    with session_scope(settings.database_url) as s:
        assert execution.claim(s, chunks[0], "someone-else", 60) is not None
    assert run_chunk(settings, chunks[0], message_id="m1").result == Result.SKIPPED
    assert chunk_row(settings, chunks[0]).lease_owner == "someone-else"


def broken_generator(*_: object) -> Generator:
    """The chunk's fault as a whole, not one item's (a generator that fails is isolated item by item)."""
    raise RuntimeError("the model could not be loaded")


def test_a_failing_chunk_is_retried_then_fails_with_its_items(settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    job_id, chunks = make_job(settings)
    monkeypatch.setattr(chunk_runner.runtime, "get_generator", broken_generator)
    retry = run_chunk(settings, chunks[0], message_id="m1")
    assert retry.result == Result.RETRY and retry.retry_after_s is not None and retry.retry_after_s > 0
    assert isinstance(retry.error, chunk_runner.ChunkFailed) and str(retry.error) == "RuntimeError"
    row = chunk_row(settings, chunks[0])
    assert (row.state, row.attempts, row.last_error) == (ChunkState.PENDING, 1, "RuntimeError")
    failed = run_chunk(settings, chunks[0], message_id="m1", retries=1)  # the second and last attempt
    assert failed.result == Result.FAILED and isinstance(failed.error, chunk_runner.ChunkFailed)
    assert chunk_row(settings, chunks[0]).state == ChunkState.FAILED
    with session_scope(settings.database_url) as s:
        items = JobRepository(s).chunk_items(chunks[0])
        assert {(i.state, i.error) for i in items} == {
            (ItemState.FAILED, "gave up after 2 attempts: RuntimeError")}
        assert s.get(Job, job_id) is not None


class Overtaken:
    """A generator during whose work the chunk's lease runs out and another worker takes the chunk."""

    def __init__(self, inner: Generator, settings: Settings, chunk_id: str) -> None:
        self.info, self.inner, self.settings, self.chunk_id = inner.info, inner, settings, chunk_id

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        with session_scope(self.settings.database_url) as s:
            s.execute(update(Chunk).where(Chunk.id == self.chunk_id).values(lease_owner="the-next-worker"))
        return self.inner.generate(batch)


def test_a_chunk_whose_lease_was_lost_records_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _, chunks = make_job(settings)
    fake = runtime.get_generator(settings, settings.model)
    monkeypatch.setattr(chunk_runner.runtime, "get_generator", lambda *_: Overtaken(fake, settings, chunks[0]))
    assert run_chunk(settings, chunks[0], message_id="m1").result == Result.LEASE_LOST
    row = chunk_row(settings, chunks[0])
    assert (row.state, row.lease_owner, row.storage_key) == (ChunkState.RUNNING, "the-next-worker", None)
    with session_scope(settings.database_url) as s:
        assert {i.state for i in JobRepository(s).chunk_items(chunks[0])} == {ItemState.PENDING}
    assert not open_store(settings).exists(result_shard_key(DEFAULT_TENANT, row.job_id, 0))


def test_a_chunk_whose_items_cannot_be_written_fails_without_a_retry(settings: Settings) -> None:
    """``FAILED`` without an exception: a deferred chunk whose items cannot be written fails at once."""
    _, chunks = make_job(settings)
    with session_scope(settings.database_url) as s:
        s.execute(update(Chunk).where(Chunk.id == chunks[0]).values(pending_lines={"offset": 0, "length": 1,
                                                                                   "items": 2, "lines": 1}))
    outcome = run_chunk(settings, chunks[0], message_id="m1")
    assert (outcome.result, outcome.error) == (Result.FAILED, None)
    assert chunk_row(settings, chunks[0]).state == ChunkState.FAILED


def unreachable(db_url: str, tmp_path: Path) -> str:
    """The same kind of database, away: a PostgreSQL port nobody listens on, an SQLite file in no folder."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return str(url.set(database=str(tmp_path / "no-such-folder" / "factory.db")))
    return url.set(port=1).render_as_string(hide_password=False)


def test_a_database_away_at_the_claim_retries_with_backoff_and_takes_nothing(settings: Settings,
                                                                              tmp_path: Path) -> None:
    _, chunks = make_job(settings)
    away = settings.model_copy(update={"database_url": unreachable(settings.database_url, tmp_path)})
    outcome = run_chunk(away, chunks[0], message_id="m1", retries=3)
    assert outcome.result == Result.RETRY and isinstance(outcome.error, OperationalError)
    assert outcome.retry_after_s is not None and 0.75 * 2**3 <= outcome.retry_after_s <= 2**3  # backoff grows
    row = chunk_row(settings, chunks[0])
    assert (row.state, row.attempts, row.lease_owner) == (ChunkState.PENDING, 0, None)
    assert run_chunk(settings, chunks[0], message_id="m1").result == Result.DONE  # once it is back


class StorageAway:
    """An object store that is down: every write fails the way a real backend's outage does."""

    def __init__(self) -> None:
        self.writes = 0

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        self.writes += 1
        raise StorageError("object storage unavailable")


def test_storage_away_while_saving_gives_the_chunk_back_without_using_an_attempt(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _, chunks = make_job(settings)
    settings = settings.model_copy(update={"task_soft_time_limit_s": 3})  # saving is retried for ~2 s
    away = StorageAway()
    monkeypatch.setattr(chunk_runner, "open_store", lambda _settings: away)
    outcome = run_chunk(settings, chunks[0], message_id="m1")
    assert away.writes >= 1
    assert outcome.result == Result.RETRY and outcome.retry_after_s is not None and outcome.retry_after_s > 0
    assert isinstance(outcome.error, chunk_runner.ChunkFailed) and str(outcome.error) == "StorageError"
    row = chunk_row(settings, chunks[0])
    assert (row.state, row.attempts, row.storage_key, row.last_error) == (ChunkState.PENDING, 0, None, "StorageError")
    with session_scope(settings.database_url) as s:  # the save was rolled back whole
        assert {i.state for i in JobRepository(s).chunk_items(chunks[0])} == {ItemState.PENDING}
    monkeypatch.undo()
    # However many outages, the chunk keeps its attempts (chunk_max_attempts=2 here).
    assert run_chunk(settings, chunks[0], message_id="m1").result == Result.DONE
    assert chunk_row(settings, chunks[0]).attempts == 1


def stopping(*_: object) -> Generator:
    raise SystemExit(0)  # a warm shutdown reaching the task (a SIGTERM to the worker process)


def test_a_process_told_to_stop_gives_the_chunk_back_and_stops(settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _, chunks = make_job(settings)
    monkeypatch.setattr(chunk_runner.runtime, "get_generator", stopping)
    with pytest.raises(SystemExit):
        run_chunk(settings, chunks[0], message_id="m1")
    row = chunk_row(settings, chunks[0])
    assert (row.state, row.attempts, row.lease_owner, row.last_error) == (ChunkState.PENDING, 0, None, "SystemExit")
