"""Every table. Import from here so Alembic sees the whole metadata."""

from factory.db.models.catalog import BrandProfile, PromptTemplate
from factory.db.models.jobs import Chunk, ChunkState, Item, ItemState, Job, JobStatus
from factory.db.models.outbox import OutboxMessage

__all__ = ["BrandProfile", "Chunk", "ChunkState", "Item", "ItemState", "Job", "JobStatus", "OutboxMessage",
           "PromptTemplate"]
