"""Thin job routes: parse, call the service, commit, then enqueue."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Response
from fastapi.responses import StreamingResponse

from factory import kinds
from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND, Responses, content
from factory.api.routing import MAX_BODY, api_router
from factory.db.session import get_sessionmaker
from factory.db.tenancy import bind_tenant
from factory.jobs import service as jobs_service
from factory.jobs.schemas import JobOut
from factory.outbox import relay
from factory.storage import open_store

router = api_router(prefix="/v1/jobs", tags=["jobs"], body_limit=MAX_BODY, responses=NOT_FOUND)


@router.post("", status_code=202, responses=BODY)
def create_job(body: kinds.JobRequest, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> JobOut:
    created = kinds.create_job(session, settings, open_store(settings), tenant, body)
    relay.commit_then_publish(session, settings, created.outbox_ids)
    return jobs_service.describe(session, created.job)


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobOut:
    return jobs_service.describe(session, jobs_service.get_job(session, tenant, job_id))


@router.post("/{job_id}/cancel", responses=CONFLICT)
def cancel_job(job_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> JobOut:
    job, outbox_ids = jobs_service.cancel_job(session, tenant, job_id)
    relay.commit_then_publish(session, settings, outbox_ids)
    return jobs_service.describe(session, job)


PROV_JSON: Responses = {200: {"description": "A W3C PROV-JSON document",
                   "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.get("/{job_id}/provenance", response_class=Response, responses={**CONFLICT, **PROV_JSON})
def get_provenance(job_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> Response:
    """The job's W3C PROV-JSON document: inputs, template, model and output objects (with the sha256 of
    what storage holds), the job and its chunks, the tenant and the worker processes."""
    body = jobs_service.provenance_document(session, open_store(settings), tenant, job_id)
    return Response(body, media_type="application/json")


@router.get("/{job_id}/results", response_class=Response, responses=content("application/x-ndjson"))
def get_results(job_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> StreamingResponse:
    job = jobs_service.get_job(session, tenant, job_id)  # 404 before streaming starts

    def lines() -> Iterator[str]:
        # Its own session (the request's one is closed before the body streams), bound to the same tenant.
        with bind_tenant(get_sessionmaker(settings.database_url)(), tenant) as stream_session:
            yield from jobs_service.iter_results(stream_session, job)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
