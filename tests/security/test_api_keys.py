"""API keys: missing, malformed, unknown, revoked and expired keys are 401; the wrong scope is 403.

Keys are stored as hashes only, shown once, managed with `factory keys` and
/v1/admin/keys. On SQLite and on PostgreSQL, with a real Redis.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from factory.config import Settings
from factory.db.base import utcnow
from factory.db.models import ApiKey, Job
from factory.db.session import get_sessionmaker, session_scope
from tests.keys import api_key, api_test_client
from tests.rows import count_rows
from tests.services import REPO

JOB = {"kind": "personalization", "template": "Hi {{ name }}", "audience": [{"id": "r1", "name": "Ana"}]}


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects")


def _no_key(settings: Settings, **headers: str | bytes) -> object:
    client = api_test_client(settings)
    client.headers.pop("Authorization")
    client.headers.update(headers)
    return client


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-key", "Bearer cf_" + "A" * 43,
    ("Bearer cf_" + "A" * 42 + "\u00e9").encode("latin-1"),
])
def test_requests_without_a_usable_key_are_401_and_write_nothing(settings: Settings,
                                                                 authorization: str | bytes | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with _no_key(settings, **headers) as client:  # type: ignore[attr-defined]
        for method, path in (("POST", "/v1/jobs"), ("GET", "/v1/files"), ("GET", "/v1/jobs/job_x"),
                             ("GET", "/v1/admin/keys"), ("GET", "/v1/nowhere")):
            resp = client.request(method, path, json=JOB if method == "POST" else None)
            assert resp.status_code == 401, (authorization, path, resp.text)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            err = resp.json()["error"]
            assert err["code"] == "invalid_api_key" and err["field"] == "authorization"
            assert "A" * 20 not in resp.text
        # Probes and the API's description of itself need no key.
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/openapi.json").json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert count_rows(settings.database_url, Job) == 0


def test_revoked_and_expired_keys_are_refused(settings: Settings) -> None:
    revoked, expired = api_key(settings.database_url), api_key(settings.database_url, expires_in_days=1)
    with api_test_client(settings, scopes=("read", "admin")) as admin:
        keys = {k["prefix"]: k["id"] for k in admin.get("/v1/admin/keys").json()["data"]}
        assert admin.post(f"/v1/admin/keys/{keys[revoked[:11]]}/revoke").status_code == 200
    with get_sessionmaker(settings.database_url)() as s:
        past = utcnow() - timedelta(seconds=1)
        s.execute(update(ApiKey).where(ApiKey.id == keys[expired[:11]]).values(expires_at=past))
        s.commit()
    with _no_key(settings) as client:  # type: ignore[attr-defined]
        for secret, why in ((revoked, "revoked"), (expired, "expired")):
            resp = client.get("/v1/files", headers={"Authorization": f"Bearer {secret}"})
            assert resp.status_code == 401 and why in resp.json()["error"]["message"]


@pytest.mark.parametrize(("scopes", "allowed"), [
    (("read",), {"GET /v1/files"}),
    (("write",), {"POST /v1/jobs"}),
    (("read", "write"), {"GET /v1/files", "POST /v1/jobs"}),
    (("admin",), {"GET /v1/admin/keys", "GET /v1/admin/doctor"}),
])
def test_each_scope_allows_its_requests_only(settings: Settings, scopes: tuple[str, ...], allowed: set[str]) -> None:
    with api_test_client(settings, scopes=scopes) as client:
        for request in ("GET /v1/files", "POST /v1/jobs", "GET /v1/admin/keys", "GET /v1/admin/doctor"):
            method, path = request.split()
            resp = client.request(method, path, json=JOB if method == "POST" else None)
            if request in allowed:
                assert resp.status_code in (200, 202), (scopes, request, resp.text)
            else:
                assert resp.status_code == 403, (scopes, request, resp.text)
                assert resp.json()["error"]["code"] == "insufficient_scope"
    assert count_rows(settings.database_url, Job) == (1 if "write" in scopes else 0)


def test_admin_endpoints_manage_the_tenants_own_keys_and_never_show_a_secret(settings: Settings) -> None:
    other = api_key(settings.database_url, tenant="globex")
    with api_test_client(settings, tenant="acme", scopes=("admin",)) as admin:
        made = admin.post("/v1/admin/keys", json={"name": "ci", "scopes": ["read"], "expires_in_days": 30})
        assert made.status_code == 201, made.text
        secret, key_id = made.json()["key"], made.json()["id"]
        assert made.json()["tenant_id"] == "acme" and made.json()["prefix"] == secret[:11]
        listed = admin.get("/v1/admin/keys").json()["data"]
        assert {k["tenant_id"] for k in listed} == {"acme"} and len(listed) == 2
        assert secret not in admin.get("/v1/admin/keys").text
        # Another tenant's key is not this admin's to see or revoke.
        globex = [k.id for k in _keys(settings) if k.tenant_id == "globex"]
        assert admin.post(f"/v1/admin/keys/{globex[0]}/revoke").status_code == 404
        bad = admin.post("/v1/admin/keys", json={"name": "x", "scopes": ["root"]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "scopes[0]"
    with _no_key(settings, Authorization=f"Bearer {secret}") as client:  # type: ignore[attr-defined]
        assert client.get("/v1/files").status_code == 200
        assert client.post("/v1/jobs", json=JOB).status_code == 403
        with api_test_client(settings, tenant="acme", scopes=("admin",)) as admin:
            assert admin.post(f"/v1/admin/keys/{key_id}/revoke").json()["revoked_at"] is not None
        assert client.get("/v1/files").status_code == 401
    with _no_key(settings, Authorization=f"Bearer {other}") as client:  # type: ignore[attr-defined]
        assert client.get("/v1/files").status_code == 200
    # Only hashes are stored, and a used key shows when it was last used.
    rows = {k.id: k for k in _keys(settings)}
    assert rows[key_id].key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert rows[key_id].last_used_at is not None
    with get_sessionmaker(settings.database_url)() as s:
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM api_keys")) for v in row)
    assert secret not in dump and other not in dump


def _keys(settings: Settings) -> list[ApiKey]:
    with session_scope(settings.database_url) as s:
        rows = list(s.query(ApiKey).all())
        s.expunge_all()
    return rows


def test_the_cli_creates_lists_and_revokes_keys(settings: Settings) -> None:
    env = {**os.environ, "FACTORY_DATABASE_URL": settings.database_url, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "factory.cli", "keys", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    made = cli("create", "--tenant", "acme", "--name", "nightly", "--scope", "read", "--expires-in-days", "7")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("cf_") and len(secret) == 46
    listed = cli("list", "--tenant", "acme")
    assert listed.returncode == 0 and secret[:11] in listed.stdout and secret not in listed.stdout
    assert "read" in listed.stdout and "nightly" in listed.stdout
    with _no_key(settings, Authorization=f"Bearer {secret}") as client:  # type: ignore[attr-defined]
        assert client.get("/v1/files").status_code == 200
        key_id = next(k.id for k in _keys(settings) if k.tenant_id == "acme")
        assert cli("revoke", key_id).returncode == 0
        assert client.get("/v1/files").status_code == 401
    assert cli("create", "--tenant", "Not A Tenant!").returncode == 2
    assert cli("revoke", "key_missing").returncode == 2
