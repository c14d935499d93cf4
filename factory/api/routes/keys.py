"""API keys of the caller's tenant, for keys with the ``admin`` scope: create (shown once), list, revoke."""

from __future__ import annotations

from factory.api.deps import SessionDep, TenantDep
from factory.api.openapi import BODY, NOT_FOUND
from factory.api.routing import api_router
from factory.auth import service as auth_service
from factory.auth.schemas import KeyCreate, KeyCreated, KeyList, KeyOut

router = api_router(prefix="/v1/admin/keys", tags=["admin"])


@router.post("", status_code=201, responses=BODY)
def create_key(body: KeyCreate, session: SessionDep, tenant: TenantDep) -> KeyCreated:
    row, secret = auth_service.create_key(session, tenant, body.name, body.scopes, body.expires_in_days)
    session.commit()
    return KeyCreated.model_validate({**KeyOut.model_validate(row).model_dump(), "key": secret})


@router.get("")
def list_keys(session: SessionDep, tenant: TenantDep) -> KeyList:
    return KeyList(data=[KeyOut.model_validate(r) for r in auth_service.list_keys(session, tenant)])


@router.post("/{key_id}/revoke", responses=NOT_FOUND)
def revoke_key(key_id: str, session: SessionDep, tenant: TenantDep) -> KeyOut:
    row = auth_service.revoke_key(session, key_id, tenant)
    session.commit()
    return KeyOut.model_validate(row)
