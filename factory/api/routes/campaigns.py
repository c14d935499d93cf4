"""Thin campaign routes: submit, status, report, exports."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import Response

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND, content
from factory.api.routing import MAX_BODY, api_router
from factory.campaigns import service
from factory.campaigns.report import build_report
from factory.campaigns.repository import CampaignRepository
from factory.campaigns.schemas import CampaignCreate, CampaignOut
from factory.outbox import relay
from factory.storage import open_store

router = api_router(prefix="/v1/campaigns", tags=["campaigns"], body_limit=MAX_BODY, responses=NOT_FOUND)

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


@router.post("", status_code=202, responses=BODY)
def create_campaign(body: CampaignCreate, session: SessionDep, settings: SettingsDep,
                    tenant: TenantDep) -> CampaignOut:
    created = service.create_campaign(session, settings, open_store(settings), tenant, body)
    relay.commit_then_publish(session, settings, created.outbox_ids)
    job, plan = service.get_campaign(session, tenant, created.job.id)
    return service.describe(session, job, plan)


@router.get("/{campaign_id}")
def get_campaign(campaign_id: str, session: SessionDep, tenant: TenantDep) -> CampaignOut:
    job, plan = service.get_campaign(session, tenant, campaign_id)
    return service.describe(session, job, plan)


@router.get("/{campaign_id}/report")
def get_report(campaign_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """Live from the items: pass rates before and after repair, attempts, failed checks, repairs."""
    job, plan = service.get_campaign(session, tenant, campaign_id)
    return build_report(job, plan, CampaignRepository(session).iter_items(job.id))


@router.get("/{campaign_id}/exports/{fmt}", response_class=Response,
            responses=CONFLICT | content(*MEDIA_TYPES.values()))
def get_export(campaign_id: str, fmt: Literal["csv", "jsonl"], session: SessionDep, settings: SettingsDep,
               tenant: TenantDep) -> Response:
    job, _plan = service.get_campaign(session, tenant, campaign_id)
    data = service.read_export(open_store(settings), job, fmt)
    return Response(data, media_type=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.{fmt}"'})
