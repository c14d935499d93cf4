"""Verify an item or a job's items: regenerate them from their records on the workers and compare
(factory/verify/)."""

from __future__ import annotations

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND
from factory.api.routing import api_router
from factory.outbox import relay
from factory.verify import service as verify_service
from factory.verify.schemas import VerificationOut, VerifyJobRequest

router = api_router(prefix="/v1", tags=["provenance"], responses=NOT_FOUND)


@router.post("/items/{item_id}/verify", status_code=202, responses=CONFLICT)
def verify_item(item_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> VerificationOut:
    """Regenerate the item with its recorded model, prompt, parameters and seed on a worker; poll ``url``
    for ``match`` or ``mismatch`` and the reasons (another weights hash, library version, device or dtype,
    text differing at a character)."""
    created = verify_service.create(session, settings, tenant, item_id)
    relay.commit_then_publish(session, settings, created.outbox_ids)
    return verify_service.get(session, tenant, created.job.id)


@router.post("/jobs/{job_id}/verify", status_code=202, responses=BODY | CONFLICT)
def verify_job(job_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
               body: VerifyJobRequest | None = None) -> VerificationOut:
    """Regenerate the job's succeeded items (or a seeded random ``sample`` of them) on the workers, each
    alone with its recorded model, prompt, parameters and seed; poll ``url`` for the counts, the
    mismatches by reason and the first mismatched items."""
    created = verify_service.create_for_job(session, settings, tenant, job_id, body or VerifyJobRequest())
    relay.commit_then_publish(session, settings, created.outbox_ids)
    return verify_service.get(session, tenant, created.job.id)


@router.get("/verifications/{verification_id}")
def get_verification(verification_id: str, session: SessionDep, tenant: TenantDep) -> VerificationOut:
    return verify_service.get(session, tenant, verification_id)
