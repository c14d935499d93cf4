"""The caller of one request, as its API key says, and what each scope allows."""

from __future__ import annotations

from dataclasses import dataclass

READ, WRITE, ADMIN = "read", "write", "admin"
SCOPES = (READ, WRITE, ADMIN)
# What `factory keys create` gives when no scope is named: a producer's key, not an operator's.
DEFAULT_SCOPES = (READ, WRITE)


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]


def required_scope(method: str, path: str) -> str:
    """The one rule: /v1/admin needs ``admin``; reading needs ``read``; everything else needs ``write``."""
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return READ
    return WRITE
