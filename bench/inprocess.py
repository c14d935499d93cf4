"""A job run to its end in this process, through the code a worker runs: every chunk by the chunk
runner (what the generate_chunk task calls), then the kind's finalize step (what finalize_job does)."""

from __future__ import annotations

from factory.config import Settings
from factory.db.models import Job
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs.repository import JobRepository
from factory.storage import ObjectStore
from workers.chunk_runner import Result, run_chunk
from workers.kinds import handler_for


def run_chunks(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as s:
        chunk_ids = JobRepository(s).chunk_ids(job_id)
    for n, chunk_id in enumerate(chunk_ids):
        outcome = run_chunk(settings, chunk_id, message_id=f"bench-{n}")
        assert outcome.result == Result.DONE, (chunk_id, outcome)


def finalize(settings: Settings, store: ObjectStore, job_id: str) -> None:
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert job is not None
        handler_for(job.kind).finalize(s, job, store)
        execution.finish_job(s, job_id)
