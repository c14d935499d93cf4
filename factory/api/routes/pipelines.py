"""Thin pipeline routes: apply, read, edit, pause and resume, run now, the run history."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND, Responses
from factory.api.routing import MAX_BODY, api_router
from factory.pipelines import service
from factory.pipelines.runs import describe as describe_run
from factory.pipelines.schemas import PipelineList, PipelineOut, PipelineSpec, PipelineUpdate, RunList, RunOut
from factory.pipelines.tick import publish
from factory.storage import open_store

# A job spec may hold a campaign's inline audience: the job bodies' limit.
router = api_router(prefix="/v1/pipelines", tags=["pipelines"], body_limit=MAX_BODY, responses=NOT_FOUND)


APPLIED: Responses = {200: {"model": PipelineOut, "description": "It existed: updated, or unchanged."}}


@router.post("", status_code=201, responses=BODY | CONFLICT | APPLIED)
def apply_pipeline(body: PipelineSpec, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                   response: Response) -> PipelineOut:
    """Create the pipeline (201), or bring the one of that name to this spec (200): applying it again
    changes nothing."""
    pipeline, applied = service.apply(session, settings, open_store(settings), tenant, body)
    session.commit()
    response.status_code = 201 if applied == "created" else 200
    return service.describe(pipeline, applied)


@router.get("")
def list_pipelines(session: SessionDep, tenant: TenantDep) -> PipelineList:
    return PipelineList(data=[service.describe(p) for p in service.list_pipelines(session, tenant)])


@router.get("/{pipeline_id}")
def get_pipeline(pipeline_id: str, session: SessionDep, tenant: TenantDep) -> PipelineOut:
    return service.describe(service.get(session, tenant, pipeline_id))


@router.patch("/{pipeline_id}", responses=BODY | CONFLICT)
def update_pipeline(pipeline_id: str, body: PipelineUpdate, session: SessionDep, settings: SettingsDep,
                    tenant: TenantDep) -> PipelineOut:
    pipeline = service.update(session, settings, open_store(settings), tenant, pipeline_id, body)
    session.commit()
    return service.describe(pipeline)


@router.delete("/{pipeline_id}", status_code=204, response_class=Response)
def delete_pipeline(pipeline_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete(session, tenant, pipeline_id)
    session.commit()
    return Response(status_code=204)


@router.post("/{pipeline_id}/pause", responses=CONFLICT)
def pause_pipeline(pipeline_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> PipelineOut:
    pipeline = service.set_enabled(session, settings, tenant, pipeline_id, False)
    session.commit()
    return service.describe(pipeline)


@router.post("/{pipeline_id}/resume", responses=CONFLICT)
def resume_pipeline(pipeline_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> PipelineOut:
    pipeline = service.set_enabled(session, settings, tenant, pipeline_id, True)
    session.commit()
    return service.describe(pipeline)


@router.post("/{pipeline_id}/run", status_code=202, responses=BODY | CONFLICT)
def run_pipeline(pipeline_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> RunOut:
    """Fire now, outside the schedule, under the pipeline's concurrency policy: the run (skipped or waiting
    when the previous one still runs)."""
    fired = service.run_now(session, settings, open_store(settings), tenant, pipeline_id)
    publish(session, settings, fired)
    return describe_run(session, fired.run)


@router.get("/{pipeline_id}/runs")
def list_runs(pipeline_id: str, session: SessionDep, tenant: TenantDep,
              before: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> RunList:
    """Newest slot first; ``before``: a run id, for the page after it."""
    return service.list_runs(session, tenant, pipeline_id, before=before, limit=limit)
