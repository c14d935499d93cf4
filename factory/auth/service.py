"""API keys: issued as random secrets, stored as sha256, checked on every request.

A key looks like ``cf_`` + 43 url-safe characters (256 random bits). The first 11
characters are its ``prefix``, which lists and logs may show; the rest is never
stored. Because the secret is high-entropy, one sha256 is enough to store it (a
slow password hash protects guessable secrets, which these are not), and the
lookup is one indexed equality on the hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.orm import Session

from factory.auth.principal import SCOPES, Principal
from factory.auth.repository import AuthRepository
from factory.auth.schemas import TENANT_ID_PATTERN
from factory.db.base import new_id, utcnow
from factory.db.models import ApiKey, Tenant
from factory.errors import InvalidInput, NotFound, Unauthorized

KEY_PREFIX = "cf_"
PREFIX_CHARS = 11
_KEY_SHAPE = re.compile(r"^cf_[A-Za-z0-9_-]{43}$")
# last_used_at is written at most this often per key, so reads do not turn into writes.
TOUCH_EVERY = timedelta(seconds=60)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_tenant(session: Session, tenant_id: str) -> Tenant:
    if not re.match(TENANT_ID_PATTERN, tenant_id):
        raise InvalidInput("tenant ids are 1-64 characters: a-z, 0-9, '_' and '-'", field="tenant")
    repo = AuthRepository(session)
    tenant = repo.tenant(tenant_id)
    if tenant is None:
        tenant = Tenant(id=tenant_id, created_at=utcnow())
        repo.add(tenant)
    return tenant


def create_key(session: Session, tenant_id: str, name: str, scopes: Iterable[str],
               expires_in_days: int | None = None) -> tuple[ApiKey, str]:
    """A new key for ``tenant_id`` (created if new); returns the row and the secret, which is shown once."""
    wanted = sorted(set(scopes), key=SCOPES.index) if set(scopes) <= set(SCOPES) else None
    if not wanted:
        raise InvalidInput(f"scopes must be a non-empty subset of {', '.join(SCOPES)}", field="scopes")
    ensure_tenant(session, tenant_id)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiKey(id=new_id("key"), tenant_id=tenant_id, name=name, prefix=secret[:PREFIX_CHARS],
                 key_hash=hash_key(secret), scopes=wanted, created_at=now,
                 expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None)
    AuthRepository(session).add(row)
    return row, secret


def authenticate(session: Session, secret: str | None) -> Principal:
    """The principal a presented key stands for; ``Unauthorized`` for anything else.

    The messages say why (missing, malformed, unknown, revoked, expired) without
    ever repeating the presented value.
    """
    if not secret:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", field="authorization")
    if not _KEY_SHAPE.match(secret):
        raise Unauthorized("malformed API key", field="authorization")
    repo = AuthRepository(session)
    row = repo.key_by_hash(hash_key(secret))
    if row is None:
        raise Unauthorized("unknown API key", field="authorization")
    now = utcnow()
    if row.revoked_at is not None:
        raise Unauthorized("this API key was revoked", field="authorization")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("this API key has expired", field="authorization")
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        repo.touch(row.id, now)
    return Principal(tenant_id=row.tenant_id, key_id=row.id, scopes=frozenset(row.scopes))


def any_key(session: Session) -> bool:
    return AuthRepository(session).any_key()


def list_keys(session: Session, tenant_id: str | None) -> list[ApiKey]:
    """Keys of one tenant, or of every tenant (``None``: the operator's CLI)."""
    return AuthRepository(session).keys(tenant_id)


def revoke_key(session: Session, key_id: str, tenant_id: str | None) -> ApiKey:
    """Revokes at once: the next request with it is a 401. Revoking twice keeps the first time."""
    row = AuthRepository(session).key(key_id, tenant_id)
    if row is None:
        raise NotFound("no such API key", field="key_id")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
