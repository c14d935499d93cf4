"""Brand profile rules: create, edit (a new version), read. Never commits."""

from __future__ import annotations

from sqlalchemy.orm import Session

from factory.brands.repository import BrandRepository
from factory.brands.schemas import BrandCreate, BrandOut, BrandRules
from factory.db.base import new_id, utcnow
from factory.db.models import BrandProfile
from factory.errors import Conflict, InvalidInput, NotFound
from factory.provenance.hashing import canonical_json, sha256_text


def _validate(rules: BrandRules) -> None:
    """A brand that contradicts itself would fail every copy: refuse it up front."""
    banned = [b.lower() for b in rules.banned_phrases]
    for channel, phrases in rules.required_phrases.items():
        for phrase in phrases:
            if any(b in phrase.lower() for b in banned):
                raise InvalidInput(f"a required phrase for {channel} contains a banned phrase",
                                   field=f"required_phrases.{channel}")
    for avoid, prefer in rules.preferred_terms.items():
        if any(b in prefer.lower() for b in banned):
            raise InvalidInput("a preferred term is itself banned", field=f"preferred_terms.{avoid}")


def _write(session: Session, tenant_id: str, name: str, rules: BrandRules, version: int) -> BrandProfile:
    profile = rules.model_dump(mode="json")
    brand = BrandProfile(id=new_id("brd"), tenant_id=tenant_id, name=name, version=version, profile=profile,
                         sha256=sha256_text(canonical_json(profile)), created_at=utcnow())
    BrandRepository(session).add(brand)
    return brand


def create_brand(session: Session, tenant_id: str, body: BrandCreate) -> BrandProfile:
    _validate(body)
    if BrandRepository(session).latest_version(tenant_id, body.name):
        raise Conflict("a brand with this name exists; PUT /v1/brands/{name} creates a new version", field="name")
    return _write(session, tenant_id, body.name, BrandRules.model_validate(body.model_dump(exclude={"name"})), 1)


def edit_brand(session: Session, tenant_id: str, name: str, rules: BrandRules) -> tuple[BrandProfile, bool]:
    """A new version, unless nothing changed (then the current one). Returns (brand, created)."""
    _validate(rules)
    repo = BrandRepository(session)
    current = repo.get(tenant_id, name)
    sha = sha256_text(canonical_json(rules.model_dump(mode="json")))
    if current is not None and current.sha256 == sha:
        return current, False
    return _write(session, tenant_id, name, rules, (current.version if current else 0) + 1), True


def get_brand(session: Session, tenant_id: str, name: str, version: int | None = None) -> BrandProfile:
    brand = BrandRepository(session).get(tenant_id, name, version)
    if brand is None:
        raise NotFound("no such brand (or version)", field="brand")
    return brand


def describe(brand: BrandProfile) -> BrandOut:
    return BrandOut(id=brand.id, name=brand.name, version=brand.version, sha256=brand.sha256,
                    profile=BrandRules.model_validate(brand.profile), created_at=brand.created_at)
