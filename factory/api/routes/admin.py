"""Operator views. Counts only (no job or chunk ids), so nothing of one tenant shows to another."""

from __future__ import annotations

from factory.api.deps import SettingsDep, SystemSessionDep
from factory.api.routing import api_router
from factory.reliability import service as reliability
from factory.reliability.schemas import DoctorReport

router = api_router(prefix="/v1/admin", tags=["admin"])


@router.get("/doctor")
def doctor(session: SystemSessionDep, settings: SettingsDep) -> DoctorReport:
    """What ``factory doctor`` reports: stuck chunks, dead letters, queue depths, lag, outbox, reconciler.

    Over every tenant (a system session, past row-level security), as the CLI's ``factory doctor``."""
    return reliability.doctor(session, settings, detail=0)
