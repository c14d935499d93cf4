"""Every table. Import from here so Alembic sees the whole metadata."""

from factory.db.models.augmentation import AugmentationSourceRow, AugmentationVerdict
from factory.db.models.auth import ApiKey, Tenant
from factory.db.models.batches import Batch
from factory.db.models.catalog import BrandProfile, PromptTemplate
from factory.db.models.files import StoredFile
from factory.db.models.idempotency import IdempotencyKey
from factory.db.models.jobs import TERMINAL_JOB_STATUSES, Chunk, ChunkState, Item, ItemState, Job, JobStatus
from factory.db.models.leases import LeaderLease
from factory.db.models.outbox import OutboxMessage
from factory.db.models.pipelines import Pipeline, PipelineRun, PipelineRunStep

__all__ = [
           "TERMINAL_JOB_STATUSES",
           "ApiKey",
           "AugmentationSourceRow",
           "AugmentationVerdict",
           "Batch",
           "BrandProfile",
           "Chunk",
           "ChunkState",
           "IdempotencyKey",
           "Item",
           "ItemState",
           "Job",
           "JobStatus",
           "LeaderLease",
           "OutboxMessage",
           "Pipeline",
           "PipelineRun",
           "PipelineRunStep",
           "PromptTemplate",
           "StoredFile",
           "Tenant",
]
