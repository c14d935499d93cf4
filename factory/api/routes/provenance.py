"""Provenance lookups: which of the caller's items produced a given text."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from factory.api.deps import SessionDep, TenantDep
from factory.api.routing import api_router
from factory.provenance import service as provenance_service
from factory.provenance.schemas import ProvenanceLookup

router = api_router(prefix="/v1/provenance", tags=["provenance"])
SHA256_PATTERN = "^[0-9a-f]{64}$"


@router.get("/lookup")
def lookup(session: SessionDep, tenant: TenantDep,
           sha256: Annotated[str, Query(pattern=SHA256_PATTERN, description="sha256 (hex) of the text, as UTF-8")],
           limit: Annotated[int, Query(ge=1, le=100)] = 20) -> ProvenanceLookup:
    return provenance_service.lookup(session, tenant, sha256, limit)
