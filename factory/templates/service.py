"""Template rules: validate at registration, version on edit, resolve a pinned version. Never commits.

Validation happens once, when a template is saved: syntax, variables used but not
declared, anything reaching outside the record (static check, then a render of a
sample record of the declared types inside the sandbox), and size limits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import PromptTemplate
from factory.errors import Conflict, InvalidInput, NotFound
from factory.provenance.hashing import canonical_json, sha256_text
from factory.templates import budget
from factory.templates.repository import TemplateRepository
from factory.templates.sandbox import CompiledTemplate, compile_template
from factory.templates.schemas import TemplateBody, TemplateCreate, TemplateOut

SAMPLE_VALUES: dict[str, Any] = {"string": "sample", "integer": 1, "number": 1.5, "boolean": True}


def validate_template(body: TemplateBody, settings: Settings) -> CompiledTemplate:
    if len(body.source) > settings.max_template_chars:
        raise InvalidInput(f"template is longer than {settings.max_template_chars} characters", field="source")
    compiled = compile_template(body.source, field="source", registered=True)
    undeclared = sorted(compiled.variables - body.variables.keys())
    if undeclared:
        raise InvalidInput(f"template uses undeclared variable(s): {', '.join(undeclared)}", field="source")
    sample = {name: SAMPLE_VALUES[kind] for name, kind in body.variables.items()}
    with budget.bound(budget.RenderBudget.from_settings(settings)):
        rendered = compiled.render(sample, field="source", as_data=True)
    if not rendered.strip():
        raise InvalidInput("template renders to an empty prompt", field="source")
    return compiled


def _fingerprint(body: TemplateBody) -> str:
    return sha256_text(canonical_json(body.model_dump(mode="json")))


def _write(session: Session, tenant_id: str, name: str, body: TemplateBody, version: int) -> PromptTemplate:
    template = PromptTemplate(
        id=new_id("tpl"), tenant_id=tenant_id, name=name, version=version, channel=body.channel,
        source=body.source, sha256=_fingerprint(body), variables=dict(body.variables),
        system_prompt=body.system_prompt, params=body.params.model_dump(exclude_unset=True) if body.params else {},
        description=body.description, created_at=utcnow(),
    )
    TemplateRepository(session).add(template)
    return template


def create_template(session: Session, settings: Settings, tenant_id: str, body: TemplateCreate) -> PromptTemplate:
    validate_template(body, settings)
    if TemplateRepository(session).latest_version(tenant_id, body.name):
        raise Conflict("a template with this name exists; PUT /v1/templates/{name} creates a new version",
                       field="name")
    return _write(session, tenant_id, body.name, TemplateBody.model_validate(body.model_dump(exclude={"name"})), 1)


def edit_template(session: Session, settings: Settings, tenant_id: str, name: str,
                  body: TemplateBody) -> tuple[PromptTemplate, bool]:
    """Editing writes a new version (jobs keep the one they pinned); unchanged content keeps the current one."""
    validate_template(body, settings)
    repo = TemplateRepository(session)
    current = repo.get(tenant_id, name)
    if current is not None and current.sha256 == _fingerprint(body):
        return current, False
    return _write(session, tenant_id, name, body, (current.version if current else 0) + 1), True


def get_template(session: Session, tenant_id: str, name: str, version: int | None = None,
                 *, field: str = "template") -> PromptTemplate:
    template = TemplateRepository(session).get(tenant_id, name, version)
    if template is None:
        raise NotFound("no such template (or version)", field=field)
    return template


def list_templates(session: Session, tenant_id: str) -> list[PromptTemplate]:
    return TemplateRepository(session).list_latest(tenant_id)


def describe(t: PromptTemplate) -> TemplateOut:
    return TemplateOut(id=t.id, name=t.name, version=t.version, channel=t.channel, source=t.source,
                       sha256=t.sha256, variables=dict(t.variables), system_prompt=t.system_prompt,
                       params=dict(t.params), description=t.description, created_at=t.created_at)
