"""Thin brand profile routes: create, edit (a new version), read."""

from __future__ import annotations

from fastapi import Response

from factory.api.deps import SessionDep, TenantDep
from factory.api.routing import api_router
from factory.brands import service
from factory.brands.schemas import BrandCreate, BrandOut, BrandRules
from factory.templates.schemas import check_name

router = api_router(prefix="/v1/brands", tags=["brands"])


@router.post("", status_code=201)
def create_brand(body: BrandCreate, session: SessionDep, tenant: TenantDep) -> BrandOut:
    brand = service.create_brand(session, tenant, body)
    session.commit()
    return service.describe(brand)


@router.put("/{name}")
def edit_brand(name: str, body: BrandRules, session: SessionDep, tenant: TenantDep, response: Response) -> BrandOut:
    """A new version (201), or the current one (200) when nothing changed."""
    check_name(name)
    brand, created = service.edit_brand(session, tenant, name, body)
    session.commit()
    response.status_code = 201 if created else 200
    return service.describe(brand)


@router.get("/{name}")
def get_brand(name: str, session: SessionDep, tenant: TenantDep, version: int | None = None) -> BrandOut:
    return service.describe(service.get_brand(session, tenant, name, version))
