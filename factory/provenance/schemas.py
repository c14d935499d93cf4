"""What ``GET /v1/provenance/lookup`` answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class ProvenanceMatch(BaseModel):
    item_id: str
    job_id: str
    kind: str
    key: str
    variant: int
    finished_at: datetime | None
    provenance: dict[str, Any]


class ProvenanceLookup(BaseModel):
    object: Literal["list"] = "list"
    content_sha256: str
    data: list[ProvenanceMatch]
