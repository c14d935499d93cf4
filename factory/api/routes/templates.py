"""Thin template routes: register, edit (a new version), read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND
from factory.api.routing import api_router
from factory.templates import service
from factory.templates.schemas import TemplateBody, TemplateCreate, TemplateOut, check_name

router = api_router(prefix="/v1/templates", tags=["templates"], responses=NOT_FOUND)


@router.post("", status_code=201, responses=BODY | CONFLICT)
def create_template(body: TemplateCreate, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> TemplateOut:
    template = service.create_template(session, settings, tenant, body)
    session.commit()
    return service.describe(template)


@router.put("/{name}", responses=BODY | {201: {"model": TemplateOut, "description": "A new version."}})
def edit_template(name: str, body: TemplateBody, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                  response: Response) -> TemplateOut:
    """A new version (201), or the current one (200) when nothing changed."""
    check_name(name)
    template, created = service.edit_template(session, settings, tenant, name, body)
    session.commit()
    response.status_code = 201 if created else 200
    return service.describe(template)


@router.get("")
def list_templates(session: SessionDep, tenant: TenantDep) -> dict[str, list[TemplateOut]]:
    return {"data": [service.describe(t) for t in service.list_templates(session, tenant)]}


@router.get("/{name}")
def get_template(name: str, session: SessionDep, tenant: TenantDep,
                 version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> TemplateOut:
    return service.describe(service.get_template(session, tenant, name, version))
