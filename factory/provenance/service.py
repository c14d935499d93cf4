"""Where a text came from: the items of a tenant whose content hashes to it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from factory.provenance.repository import ProvenanceRepository
from factory.provenance.schemas import ProvenanceLookup, ProvenanceMatch


def lookup(session: Session, tenant_id: str, content_sha256: str, limit: int) -> ProvenanceLookup:
    rows = ProvenanceRepository(session).items_by_content(tenant_id, content_sha256, limit)
    return ProvenanceLookup(content_sha256=content_sha256, data=[
        ProvenanceMatch(item_id=item.id, job_id=item.job_id, kind=kind, key=item.key, variant=item.variant,
                        finished_at=item.finished_at, provenance=item.provenance or {})
        for item, kind in rows])
