"""Requests per second per API key and per tenant: checked here, once, right behind authentication.

An ASGI middleware, so a refused request costs no route, no body parsing and no
database session. It reads the caller that AuthenticationMiddleware put in
``scope["state"]["principal"]`` (public paths have none and are not limited), counts the
request in Redis (``factory.quotas.service.request_verdict``) and answers **429** with
``Retry-After`` (whole seconds) when the key or its tenant is over its limit. Every
counted response carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (seconds until a request frees up) of the key's limit, or of the
tenant's when the key has none.

A tenant's own limits are read from the database at most every ``TENANT_QUOTAS_TTL_S``
per process; if Redis is away the request goes through (see factory/quotas/counters.py).
"""

from __future__ import annotations

import time

from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factory.api.errors import error_body
from factory.auth.principal import Principal
from factory.config import Settings
from factory.db.session import get_sessionmaker
from factory.errors import RateLimited
from factory.quotas import service
from factory.quotas.counters import Verdict, for_broker
from factory.quotas.service import Quotas

TENANT_QUOTAS_TTL_S = 5.0
_MAX_CACHED_TENANTS = 10_000


def _headers(verdict: Verdict) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(verdict.limit), "X-RateLimit-Remaining": str(verdict.remaining),
            "X-RateLimit-Reset": str(verdict.reset_in_s)}


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.counters = for_broker(settings.broker_url)
        self._quotas: dict[str, tuple[float, Quotas]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal: Principal | None = scope.get("state", {}).get("principal") if scope["type"] == "http" else None
        if principal is None:
            await self.app(scope, receive, send)
            return
        quotas = await self._tenant_quotas(principal.tenant_id)
        if not (quotas.requests_per_key or quotas.requests_per_tenant):
            await self.app(scope, receive, send)
            return
        answer = await run_in_threadpool(service.request_verdict, self.counters, self.settings, quotas, principal)
        if answer is None:
            await self.app(scope, receive, send)
            return
        name, verdict = answer
        if not verdict.allowed:
            exc = RateLimited(f"rate limit {name}: more than {verdict.limit} requests in "
                              f"{self.settings.quota_requests_window_s} s; retry after {verdict.reset_in_s} s",
                              field=name, retry_after_s=verdict.reset_in_s)
            response = JSONResponse(error_body(exc.code, exc.message, exc.field, status=429), status_code=429,
                                    headers={**exc.headers, **_headers(verdict)})
            await response(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in _headers(verdict).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _tenant_quotas(self, tenant_id: str) -> Quotas:
        now = time.monotonic()
        cached = self._quotas.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            quotas = await run_in_threadpool(self._read_quotas, tenant_id)
        except (OperationalError, InterfaceError):  # the database is away: the settings' values meanwhile
            return service.effective(self.settings, None)
        if len(self._quotas) >= _MAX_CACHED_TENANTS:
            self._quotas.clear()
        self._quotas[tenant_id] = (now + TENANT_QUOTAS_TTL_S, quotas)
        return quotas

    def _read_quotas(self, tenant_id: str) -> Quotas:
        with get_sessionmaker(self.settings.database_url)() as session:
            session.info["tenant_id"] = tenant_id  # like every request's session
            return service.tenant_quotas(session, self.settings, tenant_id)
