"""Thin batch routes (OpenAI Batch API): parse, call the service, commit, then enqueue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Query, Response
from fastapi.responses import StreamingResponse

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND, content
from factory.api.routing import api_router
from factory.batches import service as batches_service
from factory.batches import status as batch_state
from factory.batches.output import ERROR, OUTPUT
from factory.batches.schemas import BatchCreate, BatchList, BatchOut
from factory.db.session import get_sessionmaker
from factory.db.tenancy import bind_tenant
from factory.outbox import relay
from factory.storage import open_store

router = api_router(prefix="/v1/batches", tags=["batches"], responses=NOT_FOUND)


@router.post("", responses=BODY)
def create_batch(body: BatchCreate, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> BatchOut:
    try:
        created = batches_service.create_batch(session, settings, open_store(settings), tenant, body)
    except batches_service.BatchValidationFailed as failed:
        session.rollback()  # no item, chunk or job row of a bad file survives
        created = batches_service.record_failed_batch(session, settings, tenant, body, failed)
    relay.commit_then_publish(session, settings, created.outbox_ids, created.messages)
    return batch_state.describe(session, created.batch)


@router.get("")
def list_batches(session: SessionDep, tenant: TenantDep,
                 after: Annotated[str | None, Query(max_length=64)] = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> BatchList:
    return batches_service.list_batches(session, tenant, after=after, limit=limit)


@router.get("/{batch_id}")
def get_batch(batch_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> BatchOut:
    batch = batches_service.get_batch(session, tenant, batch_id)
    outbox_ids = batches_service.expire_if_due(session, batch)
    if outbox_ids:
        relay.commit_then_publish(session, settings, outbox_ids)
    return batch_state.describe(session, batch)


@router.post("/{batch_id}/cancel", responses=CONFLICT)
def cancel_batch(batch_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> BatchOut:
    batch, outbox_ids = batches_service.cancel_batch(session, tenant, batch_id)
    relay.commit_then_publish(session, settings, outbox_ids)
    return batch_state.describe(session, batch)


def _stream(settings: SettingsDep, batch_id: str, tenant: str, which: str) -> Iterator[str]:
    # Its own session (the request's one is closed before the body streams), bound to the same tenant.
    with bind_tenant(get_sessionmaker(settings.database_url)(), tenant) as stream_session:
        batch = batches_service.get_batch(stream_session, tenant, batch_id)
        yield from batches_service.iter_partial(stream_session, batch, which)


@router.get("/{batch_id}/output", response_class=Response, responses=content("application/jsonl"))
def get_output(batch_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> StreamingResponse:
    """The output lines finished so far (while running too): the output file's lines, in input order."""
    batches_service.get_batch(session, tenant, batch_id)  # 404 before streaming starts
    return StreamingResponse(_stream(settings, batch_id, tenant, OUTPUT), media_type="application/jsonl")


@router.get("/{batch_id}/errors", response_class=Response, responses=content("application/jsonl"))
def get_errors(batch_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> StreamingResponse:
    """The error lines finished so far (while running too): the error file's lines, in input order."""
    batches_service.get_batch(session, tenant, batch_id)
    return StreamingResponse(_stream(settings, batch_id, tenant, ERROR), media_type="application/jsonl")
