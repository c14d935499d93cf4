"""Liveness and readiness."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from sqlalchemy import text

from factory import queue
from factory.api.deps import SessionDep, SettingsDep
from factory.api.routing import api_router

router = api_router(prefix="", tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(session: SessionDep, settings: SettingsDep) -> JSONResponse:
    checks: dict[str, bool] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    checks["broker"] = queue.ping_broker(settings)
    ok = all(checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)
