"""Liveness and readiness."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from sqlalchemy import text

from factory import queue
from factory.api.deps import SettingsDep
from factory.api.routing import api_router
from factory.db.session import get_sessionmaker

router = api_router(prefix="", tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """Public (no API key): probes must not need a secret. Answers with booleans only."""
    checks: dict[str, bool] = {}
    try:
        with get_sessionmaker(settings.database_url)() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    checks["broker"] = queue.ping_broker(settings)
    ok = all(checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)
