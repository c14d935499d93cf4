"""What a worker would do to a job, done in the test's process (no model, no broker round trip).

For tests about what happens to a job's rows and objects after it ran (erasure, retention), where
the text itself does not matter: each chunk is claimed, its pending items get ``text``, and it is
closed with its result shard through the worker's own steps (``execution.claim`` / ``complete``,
``write_result_shard``); then the job gets its final status. The worker's own path is tested with
real worker processes and ``workers.chunk_runner.run_chunk`` (tests/integration/test_chunk_runner.py).
"""

from __future__ import annotations

from factory.config import Settings
from factory.db.models import JobStatus
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs import service as jobs_service
from factory.jobs.repository import JobRepository
from factory.outbox.repository import OutboxRepository
from factory.storage import open_store
from factory.storage.keys import result_shard_key

OWNER = "in-process"


def run_to_the_end(settings: Settings, job_id: str, text: str) -> JobStatus | None:
    """Every pending item succeeds with ``text``; returns the job's final status."""
    with session_scope(settings.database_url) as s:
        chunk_ids = JobRepository(s).chunk_ids(job_id)
    for chunk_id in chunk_ids:
        _run_chunk(settings, chunk_id, text)
    with session_scope(settings.database_url) as s:
        return execution.finish_job(s, job_id)


def _run_chunk(settings: Settings, chunk_id: str, text: str) -> None:
    store = open_store(settings)
    with session_scope(settings.database_url) as s:
        claimed = execution.claim(s, chunk_id, OWNER, settings.chunk_lease_s)
        if claimed is None:  # finished or cancelled
            return
        job, chunk = claimed.job, claimed.chunk
        for item in claimed.items:
            execution.record_success(s, item, text, {"model": "in-process"})
        s.flush()
        key = result_shard_key(job.tenant_id, job.id, chunk.seq)
        closed, outbox_ids = execution.complete(
            s, chunk, OWNER, key, on_closed=lambda: jobs_service.write_result_shard(s, store, job, chunk.id, key))
        assert closed
        OutboxRepository(s).mark_sent(outbox_ids)  # the finalize message: run by run_to_the_end, in this process
