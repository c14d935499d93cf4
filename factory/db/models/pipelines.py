"""Scheduled pipelines: a saved job spec that fires on a calendar, and one run row per firing.

A run is written in the same transaction as the job(s) it starts and is unique on
(pipeline, slot): a second scheduler, a redelivered tick or a restarted one that tries the
same slot fails the insert and starts nothing ("already fired"). See docs/pipelines.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from factory.db.base import DEFAULT_TENANT, Base, utcnow


class Pipeline(Base):
    __tablename__ = "pipelines"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_pipelines_tenant_name"),
        Index("ix_pipelines_enabled_next_fire_at", "enabled", "next_fire_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(64))
    # {"cron": "0 6 * * MON", "timezone": "Europe/Berlin"} or {"every_seconds": 3600}
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    # {"kind": "campaign" | "augmentation" | "batch", "request": {... the direct submission's body}}
    job: Mapped[dict[str, Any]] = mapped_column(JSON)
    # None, {"source": "file", "file_id"}, {"source": "newest" | "new_since_last_run", "prefix"}
    input: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    concurrency: Mapped[str] = mapped_column(String(16), default="skip")
    catch_up: Mapped[str] = mapped_column(String(16), default="run_once")
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    # The next slot to fire (None while paused); the scheduler fires it once it is due.
    next_fire_at: Mapped[datetime | None] = mapped_column(default=None)
    # "new_since_last_run": the last file taken, in (created_at, id) order.
    cursor_created_at: Mapped[datetime | None] = mapped_column(default=None)
    cursor_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # Bumped by every firing and edit with a compare-and-set: two firings that read the same
    # state cannot both write (so the cursor hands each file out once, on SQLite too).
    revision: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineRun(Base):
    __tablename__ = "pipeline_runs"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "slot_at", name="uq_pipeline_runs_pipeline_id_slot_at"),
        Index("ix_pipeline_runs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    slot_at: Mapped[datetime] = mapped_column()
    # "schedule", "catch_up" (a slot missed while no scheduler ran) or "manual" (run now)
    trigger: Mapped[str] = mapped_column(String(16))
    # waiting (queued behind the previous run) | queued | running | succeeded | failed | cancelled | skipped
    status: Mapped[str] = mapped_column(String(16))
    # What it started: [{"job_id", "batch_id", "file_id"}], one per input file (or one without input).
    jobs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Earlier slots this firing stands for (they came due while no scheduler ran, or behind this one).
    missed: Mapped[int] = mapped_column(Integer, default=0)
    fired_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    webhook_last_error: Mapped[str | None] = mapped_column(Text, default=None)
