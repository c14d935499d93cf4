"""Batch jobs (OpenAI Batch API): lines run as items through the default chat generation;
finalization writes the output and error files (see factory/batches/service.py)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from factory.batches import service as batches_service
from factory.db.models import Job
from factory.storage import ObjectStore
from workers.kinds.base import KindHandler


class BatchHandler(KindHandler):
    def finalize(self, session: Session, job: Job, store: ObjectStore) -> list[str]:
        """Manifest, then the OpenAI output/error JSONL files; idempotent (deterministic file ids and keys)."""
        super().finalize(session, job, store)
        return batches_service.finalize_batch(session, store, job)
