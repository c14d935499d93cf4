"""Verify an item: regenerate it from its record on a worker and compare (factory/verify/)."""

from __future__ import annotations

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import CONFLICT, NOT_FOUND
from factory.api.routing import api_router
from factory.outbox import relay
from factory.verify import service as verify_service
from factory.verify.schemas import VerificationOut

router = api_router(prefix="/v1", tags=["provenance"], responses=NOT_FOUND)


@router.post("/items/{item_id}/verify", status_code=202, responses=CONFLICT)
def verify_item(item_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> VerificationOut:
    """Regenerate the item with its recorded model, prompt, parameters and seed on a worker; poll ``url``
    for ``match`` or ``mismatch`` and the reasons (another weights hash, library version, device or dtype,
    text differing at a character)."""
    created = verify_service.create(session, settings, tenant, item_id)
    relay.commit_then_publish(session, settings, created.outbox_ids)
    return verify_service.get(session, tenant, created.job.id)


@router.get("/verifications/{verification_id}")
def get_verification(verification_id: str, session: SessionDep, tenant: TenantDep) -> VerificationOut:
    return verify_service.get(session, tenant, verification_id)
