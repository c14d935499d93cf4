"""Augmentation jobs: their source rows, and the quality verdict on each generated item.

A filtered item is not a failed one: it was generated (``items.state`` stays
``succeeded``, so every item still ends exactly once); its verdict row says
whether it reached the exported dataset and, if not, which filter stopped it.
Verdicts are written by the job's finalize step and rewritten whole if it reruns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from factory.db.base import DEFAULT_TENANT, Base


class AugmentationSourceRow(Base):
    """One row of the submitted dataset (what the job augments, and what filters compare to)."""

    __tablename__ = "augmentation_source_rows"
    __table_args__ = (UniqueConstraint("job_id", "row_id", name="uq_augmentation_source_rows_job_id_row_id"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    row_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)


class AugmentationVerdict(Base):
    """Whether a succeeded item passed the filters; ``reason`` names the first filter that refused it."""

    __tablename__ = "augmentation_verdicts"
    __table_args__ = (Index("ix_augmentation_verdicts_job_id_accepted", "job_id", "accepted"),)

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # Cosine to its own source row, best cosine to anything it duplicates, predicted label...
    similarity: Mapped[float | None] = mapped_column(Float, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
