"""What a worker would do to a job, done in the test's process (no model, no broker round trip).

For tests about what happens to a job's rows and objects after it ran (erasure, retention), where
the text itself does not matter: each pending item gets a text, each chunk a result shard in
storage, the job its final status. The worker's own path is tested with real worker processes.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from factory.config import Settings
from factory.db.base import utcnow
from factory.db.models import Chunk, ChunkState, ItemState, Job, JobStatus
from factory.db.session import get_sessionmaker
from factory.jobs import execution
from factory.storage import open_store
from factory.storage.keys import result_shard_key


def run_to_the_end(settings: Settings, job_id: str, text: str) -> JobStatus | None:
    """Every pending item succeeds with ``text``; returns the job's final status."""
    store = open_store(settings)
    with get_sessionmaker(settings.database_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None
        for chunk in s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.seq)):
            for item in execution.chunk_items(s, chunk.id):
                if item.state == ItemState.PENDING:
                    execution.record_success(s, item, text, {"model": "in-process"})
            key = result_shard_key(job.tenant_id, job_id, chunk.seq)
            store.put_bytes(key, json.dumps({"key": chunk.id, "text": text}).encode() + b"\n")
            if not chunk.state.is_terminal:
                chunk.state, chunk.storage_key, chunk.finished_at = ChunkState.SUCCEEDED, key, utcnow()
        status = execution.finish_job(s, job_id)
        s.commit()
    return status
