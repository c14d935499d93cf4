"""Every table. Import from here so Alembic sees the whole metadata."""

from factory.db.models.augmentation import AugmentationSourceRow, AugmentationVerdict
from factory.db.models.jobs import Chunk, ChunkState, Item, ItemState, Job, JobStatus
from factory.db.models.outbox import OutboxMessage

__all__ = ["AugmentationSourceRow", "AugmentationVerdict", "Chunk", "ChunkState", "Item", "ItemState", "Job",
           "JobStatus", "OutboxMessage"]
