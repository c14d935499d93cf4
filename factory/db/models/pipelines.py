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
    # The steps after the first (chained: each takes the previous step's output), [{"kind", "request",
    # "body"?}]; None for a one-step pipeline. ``job`` is the first step.
    chain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
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
    # The pipeline's ``chain`` when the run fired: a run follows the steps it fired with, edits or not.
    chain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # Earlier slots this firing stands for (they came due while no scheduler ran, or behind this one).
    missed: Mapped[int] = mapped_column(Integer, default=0)
    fired_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    webhook_last_error: Mapped[str | None] = mapped_column(Text, default=None)


class PipelineRunStep(Base):
    """One step of a run, for one of its inputs (a "lane": a run over three new files runs three chains).

    Step 0 is written with the run; step n+1 in the transaction that ends step n's job (the job's
    finalize step, factory/pipelines/chain.py), with step n's output as its input. Unique on (run, lane,
    step), so a step is started once; ``job_id`` is unique, which is how a job's end finds its step.
    """

    __tablename__ = "pipeline_run_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "lane", "step", name="uq_pipeline_run_steps_run_id_lane_step"),
        UniqueConstraint("job_id", name="uq_pipeline_run_steps_job_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    lane: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    # campaign | augmentation | batch | export
    kind: Mapped[str] = mapped_column(String(16))
    # queued | running | succeeded | failed | cancelled (stored once final; derived from the job before)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    batch_id: Mapped[str | None] = mapped_column(String(40), default=None)
    input_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # What the next step takes: a batch's output file, an export's file (None until it ended).
    output_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
