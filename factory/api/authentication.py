"""Every request but health checks and the API's own docs carries an API key: checked here, once.

An ASGI middleware rather than a route dependency, because the middlewares behind
it need the caller before any route runs: idempotency keys are stored per tenant,
and quotas count per tenant and key. It answers 401 (no usable key, with a
``WWW-Authenticate: Bearer`` challenge) or 403 (the key lacks the scope the
request needs, by ``factory.auth.principal.required_scope``), and otherwise puts the
``Principal`` in ``scope["state"]["principal"]``, which ``deps.get_principal`` reads.
"""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from factory import log_context
from factory.api.errors import error_body
from factory.auth import service as auth_service
from factory.auth.principal import Principal, required_scope
from factory.config import Settings
from factory.db.session import get_sessionmaker
from factory.errors import FactoryError, Forbidden

# Reachable without a key: probes, the API's description of itself, and /metrics (which has a token of its
# own, FACTORY_METRICS_TOKEN: factory.api.routes.metrics).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/metrics"})


def bearer_token(authorization: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (scheme case-insensitive, as RFC 6750 allows)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope).get("authorization"))
        try:
            principal = await run_in_threadpool(self._authenticate, token)
            needed = required_scope(scope["method"], scope["path"])
            if needed not in principal.scopes:
                raise Forbidden(f"this API key lacks the '{needed}' scope this request needs", field="authorization")
        except FactoryError as exc:
            response = JSONResponse(error_body(exc.code, exc.message, exc.field, status=exc.status_code),
                                    status_code=exc.status_code, headers=exc.headers)
            await response(scope, receive, send)
            return
        except (OperationalError, InterfaceError):  # the database is away: retryable, like any route's 503
            response = JSONResponse(error_body("database_unavailable", "the database is unavailable; retry shortly",
                                               status=503), status_code=503, headers={"Retry-After": "2"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        log_context.bind(tenant_id=principal.tenant_id)  # until the request ends (its log scope)
        await self.app(scope, receive, send)

    def _authenticate(self, token: str | None) -> Principal:
        with get_sessionmaker(self.settings.database_url)() as session:
            principal = auth_service.authenticate(session, token)
            session.commit()  # last_used_at, when it was due
            return principal
