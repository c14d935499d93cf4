"""API shapes for keys (the admin endpoints and the CLI print the same fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["read", "write", "admin"]
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read", "write"]), min_length=1, max_length=3)
    # Days until the key stops working; none means it lives until revoked.
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["api_key"] = "api_key"
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyOut):
    # The secret, shown this once; only its sha256 is stored.
    key: str


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]
