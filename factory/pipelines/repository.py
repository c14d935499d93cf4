"""The only place with SQL for pipelines and their runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.orm import Session

from factory.db.models import Job, Pipeline, PipelineRun, PipelineRunStep, StoredFile

ACTIVE = ("queued", "running")


class PipelineRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- pipelines --------------------------------------------------------------
    def add(self, pipeline: Pipeline) -> None:
        self.session.add(pipeline)
        self.session.flush()

    def get(self, tenant_id: str, pipeline_id: str) -> Pipeline | None:
        return self.session.scalar(select(Pipeline).where(Pipeline.id == pipeline_id,
                                                          Pipeline.tenant_id == tenant_id))

    def get_by_id(self, pipeline_id: str) -> Pipeline | None:
        """Fresh from the database (the scheduler's sessions see every tenant)."""
        return self.session.scalar(select(Pipeline).where(Pipeline.id == pipeline_id)
                                   .execution_options(populate_existing=True))

    def by_name(self, tenant_id: str, name: str) -> Pipeline | None:
        return self.session.scalar(select(Pipeline).where(Pipeline.tenant_id == tenant_id, Pipeline.name == name))

    def for_tenant(self, tenant_id: str) -> list[Pipeline]:
        return list(self.session.scalars(select(Pipeline).where(Pipeline.tenant_id == tenant_id)
                                         .order_by(Pipeline.name)))

    def due_ids(self, now: datetime, limit: int = 500) -> list[str]:
        """Enabled pipelines whose next slot has come, oldest slot first."""
        return list(self.session.scalars(
            select(Pipeline.id).where(Pipeline.enabled.is_(True), Pipeline.next_fire_at <= now)
            .order_by(Pipeline.next_fire_at).limit(limit)))

    def claim(self, pipeline_id: str, revision: int, **values: Any) -> bool:
        """Compare-and-set: write ``values`` and bump the revision only if nobody did since ``revision`` was
        read. The first write of a firing or an edit, so two of them that read the same state cannot both
        go on (on SQLite, whose reads take no lock, as on PostgreSQL)."""
        result = self.session.execute(
            update(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.revision == revision)
            .values(revision=revision + 1, **values))
        return bool(getattr(result, "rowcount", 0) == 1)

    def delete(self, pipeline: Pipeline) -> None:
        runs = select(PipelineRun.id).where(PipelineRun.pipeline_id == pipeline.id).scalar_subquery()
        self.session.execute(delete(PipelineRunStep).where(PipelineRunStep.run_id.in_(runs)))
        self.session.execute(delete(PipelineRun).where(PipelineRun.pipeline_id == pipeline.id))
        self.session.execute(delete(Pipeline).where(Pipeline.id == pipeline.id))

    # --- runs -------------------------------------------------------------------
    def add_run(self, run: PipelineRun) -> None:
        """Flushes at once: a second firing of the same slot fails here (IntegrityError)."""
        self.session.add(run)
        self.session.flush()

    def get_run(self, run_id: str) -> PipelineRun | None:
        return self.session.get(PipelineRun, run_id)

    def runs(self, pipeline_id: str, *, before: PipelineRun | None, limit: int) -> list[PipelineRun]:
        """Newest slot first, after the cursor run; ``limit + 1`` rows tell whether there is more."""
        stmt = select(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id)
        if before is not None:
            stmt = stmt.where(tuple_(PipelineRun.slot_at, PipelineRun.id) < tuple_(before.slot_at, before.id))
        return list(self.session.scalars(stmt.order_by(PipelineRun.slot_at.desc(), PipelineRun.id.desc())
                                         .limit(limit + 1)))

    def open_runs(self, pipeline_id: str) -> list[PipelineRun]:
        """Runs of the pipeline that have not ended: waiting, queued or running."""
        return list(self.session.scalars(
            select(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id,
                                      PipelineRun.status.in_(("waiting", *ACTIVE)))
            .order_by(PipelineRun.slot_at)))

    def active_runs(self, limit: int = 500) -> list[PipelineRun]:
        """Runs of every pipeline whose jobs were started and may have ended since (the scheduler settles them)."""
        return list(self.session.scalars(select(PipelineRun).where(PipelineRun.status.in_(ACTIVE))
                                         .order_by(PipelineRun.fired_at).limit(limit)))

    def pipelines_with_waiting_runs(self, limit: int = 500) -> list[str]:
        return list(self.session.scalars(select(PipelineRun.pipeline_id).where(PipelineRun.status == "waiting")
                                         .distinct().limit(limit)))

    def update_active_run(self, run_id: str, **values: Any) -> bool:
        """Compare-and-set: write ``values`` only while the run is queued or running, so of the scheduler
        settling it and a step's end ending it at the same moment, one ends it (one webhook), and a stale
        settle cannot overwrite an ended run's status, counts or error. False: it had ended."""
        result = self.session.execute(
            update(PipelineRun).where(PipelineRun.id == run_id, PipelineRun.status.in_(ACTIVE))
            .values(**values).execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0) == 1)

    # --- steps ------------------------------------------------------------------
    def add_step(self, step: PipelineRunStep) -> None:
        """Flushes at once: a step started twice (a finalize step run again) fails here (IntegrityError)."""
        self.session.add(step)
        self.session.flush()

    def step_for_job(self, job_id: str) -> PipelineRunStep | None:
        return self.session.scalar(select(PipelineRunStep).where(PipelineRunStep.job_id == job_id))

    def steps(self, run_id: str) -> list[PipelineRunStep]:
        return list(self.session.scalars(select(PipelineRunStep).where(PipelineRunStep.run_id == run_id)
                                         .order_by(PipelineRunStep.lane, PipelineRunStep.step)))

    def jobs(self, job_ids: list[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        return {j.id: j for j in self.session.scalars(select(Job).where(Job.id.in_(job_ids))
                                                     .execution_options(populate_existing=True))}

    # --- input files ------------------------------------------------------------
    def file(self, tenant_id: str, file_id: str) -> StoredFile | None:
        return self.session.scalar(select(StoredFile).where(StoredFile.id == file_id,
                                                            StoredFile.tenant_id == tenant_id))

    def files(self, tenant_id: str, prefix: str, purpose: str, *, newest_first: bool, limit: int,
              after: tuple[datetime, str] | None = None) -> list[StoredFile]:
        """The tenant's files of ``purpose`` whose name starts with ``prefix``, in (created_at, id) order,
        after the cursor ``after``."""
        stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id, StoredFile.purpose == purpose,
                                        StoredFile.filename.startswith(prefix, autoescape=True))
        if after is not None:
            stmt = stmt.where(tuple_(StoredFile.created_at, StoredFile.id) > tuple_(*after))
        if newest_first:
            stmt = stmt.order_by(StoredFile.created_at.desc(), StoredFile.id.desc())
        else:
            stmt = stmt.order_by(StoredFile.created_at, StoredFile.id)
        return list(self.session.scalars(stmt.limit(limit)))
