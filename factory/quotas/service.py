"""Quotas and rate limits per tenant and per API key. Takes a session, never commits.

- Request rates (``requests_per_key``, ``requests_per_tenant`` per
  ``FACTORY_QUOTA_REQUESTS_WINDOW_S``): a moving window in Redis, checked for every
  authenticated request by ``factory.api.rate_limit.RateLimitMiddleware``.
- Work (``concurrent_jobs``, ``queued_items``, ``items_per_day``, ``job_prompt_bytes``): checked by ``admit``,
  which every path that writes a job calls once the job's item count is known and before
  its transaction commits, so a refusal leaves nothing written. The first two are counted
  in the database; items per day in Redis, where an admitted job's items stay counted
  even if the submit fails afterwards (no refunds: a retry cannot double-spend a window).
  A batch is admitted with every item its lines expand to, including those a worker
  writes later when it claims their chunk; a chat completion is a job of ``n`` items.

Each value is the setting ``FACTORY_QUOTA_<NAME>`` unless the tenant has its own
(``tenants.quotas``, set by ``set_quota``); 0 means unlimited. Two submits racing each
other may both pass a database quota they together exceed: the check does not lock the
tenant, so that a batch being validated does not hold up the tenant's chat requests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.orm import Session

from factory.auth.principal import Principal
from factory.auth.repository import AuthRepository
from factory.config import Settings
from factory.db.models import Job
from factory.errors import InvalidInput, NotFound, PayloadTooLarge, QuotaExceeded
from factory.quotas.counters import Counters, Verdict, for_broker
from factory.quotas.repository import QuotaRepository


@dataclass(frozen=True)
class Quotas:
    requests_per_key: int
    requests_per_tenant: int
    concurrent_jobs: int
    queued_items: int
    items_per_day: int
    job_prompt_bytes: int


QUOTA_NAMES = tuple(f.name for f in fields(Quotas))


def effective(settings: Settings, overrides: dict[str, Any] | None) -> Quotas:
    """The settings' values, replaced by a tenant's own where it has one."""
    values = {name: int(getattr(settings, f"quota_{name}")) for name in QUOTA_NAMES}
    values.update({name: int(v) for name, v in (overrides or {}).items() if name in values})
    return Quotas(**values)


def tenant_quotas(session: Session, settings: Settings, tenant_id: str) -> Quotas:
    tenant = AuthRepository(session).tenant(tenant_id)
    return effective(settings, tenant.quotas if tenant is not None else None)


def set_quota(session: Session, settings: Settings, tenant_id: str, name: str, value: int | None) -> Quotas:
    """Give ``tenant_id`` its own value of quota ``name`` (0 = unlimited), or ``None``: back to the setting's."""
    if name not in QUOTA_NAMES:
        raise InvalidInput(f"quota names are {', '.join(QUOTA_NAMES)}", field="name")
    if value is not None and value < 0:
        raise InvalidInput("a quota is a whole number, 0 or more (0 = unlimited)", field="value")
    tenant = AuthRepository(session).tenant(tenant_id)
    if tenant is None:
        raise NotFound("no such tenant", field="tenant")
    own = dict(tenant.quotas or {})
    if value is None:
        own.pop(name, None)
    else:
        own[name] = value
    tenant.quotas = own or None  # a new dict: the JSON column sees the change
    session.flush()
    return effective(settings, tenant.quotas)


def admit(session: Session, settings: Settings, job: Job, *, prompt_bytes: int = 0) -> None:
    """The one quota check of submitted work: raises ``QuotaExceeded`` if ``job`` (not committed yet, its
    ``item_count`` final) would take its tenant over ``concurrent_jobs``, ``queued_items`` or
    ``items_per_day``, and ``PayloadTooLarge`` if the prompt text it stores (``prompt_bytes``, every item
    counted) is over ``job_prompt_bytes``. The job itself may already be flushed: it is left out of the counts."""
    quotas = tenant_quotas(session, settings, job.tenant_id)
    if quotas.job_prompt_bytes and prompt_bytes > quotas.job_prompt_bytes:
        raise PayloadTooLarge(f"quota job_prompt_bytes: this job's prompts total {prompt_bytes} bytes, more than "
                              f"this tenant's limit of {quotas.job_prompt_bytes}", field="job_prompt_bytes")
    repo = QuotaRepository(session)
    tenant, items = job.tenant_id, job.item_count
    if quotas.concurrent_jobs and repo.unfinished_jobs(tenant, job.id) >= quotas.concurrent_jobs:
        raise QuotaExceeded(f"quota concurrent_jobs: this tenant already has {quotas.concurrent_jobs} unfinished "
                            "jobs; retry when one ends", field="concurrent_jobs",
                            retry_after_s=settings.quota_retry_after_s)
    limit = quotas.queued_items
    # The exact count reads the items of every unfinished job: only asked when the cheap bound is over.
    if limit and repo.items_of_unfinished_jobs(tenant, job.id) + items > limit \
            and repo.queued_items(tenant, job.id) + items > limit:
        raise QuotaExceeded(f"quota queued_items: this request's {items} items would take the items waiting "
                            f"to be generated over {limit}", field="queued_items",
                            retry_after_s=settings.quota_retry_after_s)
    if quotas.items_per_day and items:
        verdict = for_broker(settings.broker_url).items_per_day(quotas.items_per_day, items, "items", tenant)
        if verdict is not None and not verdict.allowed:
            more = " (more than the whole quota)" if items > quotas.items_per_day else ""
            raise QuotaExceeded(f"quota items_per_day: this request's {items} items{more} would take this tenant "
                                f"over {quotas.items_per_day} items in 24 hours", field="items_per_day",
                                retry_after_s=verdict.reset_in_s)


def request_verdict(counters: Counters, settings: Settings, quotas: Quotas,
                    principal: Principal) -> tuple[str, Verdict] | None:
    """Count one request of ``principal``: the first limit that refuses it, else the key's own verdict
    (for the X-RateLimit headers); None when no limit applies or Redis is away.

    The key is counted first, so a key over its own limit does not use up its tenant's budget
    and its sibling keys go on working."""
    window = settings.quota_requests_window_s
    answer: tuple[str, Verdict] | None = None
    for name, limit, identifier in (("requests_per_key", quotas.requests_per_key, principal.key_id),
                                    ("requests_per_tenant", quotas.requests_per_tenant, principal.tenant_id)):
        if not limit:
            continue
        verdict = counters.requests(limit, window, name, identifier)
        if verdict is None:
            continue
        if not verdict.allowed:
            return name, verdict
        answer = answer or (name, verdict)
    return answer
