"""Thin brand profile routes: create, edit (a new version), read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from factory.api.deps import SessionDep, TenantDep
from factory.api.openapi import BODY, CONFLICT, NOT_FOUND
from factory.api.routing import api_router
from factory.brands import service
from factory.brands.schemas import BrandCreate, BrandOut, BrandRules
from factory.templates.schemas import check_name

router = api_router(prefix="/v1/brands", tags=["brands"], responses=NOT_FOUND)


@router.post("", status_code=201, responses=BODY | CONFLICT)
def create_brand(body: BrandCreate, session: SessionDep, tenant: TenantDep) -> BrandOut:
    brand = service.create_brand(session, tenant, body)
    session.commit()
    return service.describe(brand)


@router.put("/{name}", responses=BODY | {201: {"model": BrandOut, "description": "A new version."}})
def edit_brand(name: str, body: BrandRules, session: SessionDep, tenant: TenantDep, response: Response) -> BrandOut:
    """A new version (201), or the current one (200) when nothing changed."""
    check_name(name)
    brand, created = service.edit_brand(session, tenant, name, body)
    session.commit()
    response.status_code = 201 if created else 200
    return service.describe(brand)


@router.get("/{name}")
def get_brand(name: str, session: SessionDep, tenant: TenantDep,
                 version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> BrandOut:
    return service.describe(service.get_brand(session, tenant, name, version))
