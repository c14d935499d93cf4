"""create_app(): routers, middleware, exception handlers, start-up work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from factory import __version__, logs, queue
from factory.api import errors, openapi, routing
from factory.api.authentication import AuthenticationMiddleware
from factory.api.deps import get_principal
from factory.api.idempotency import IdempotencyMiddleware
from factory.api.observability import ObservabilityMiddleware
from factory.api.rate_limit import RateLimitMiddleware
from factory.api.routes import (
    admin,
    augmentation,
    batches,
    brands,
    campaigns,
    chat,
    files,
    health,
    jobs,
    keys,
    metrics,
    pipelines,
    provenance,
    templates,
    verify,
)
from factory.auth import service as auth_service
from factory.config import Settings, get_settings
from factory.db import migrate, tenancy
from factory.db.session import get_engine, get_sessionmaker
from factory.metrics import multiprocess
from factory.outbox import relay

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or get_settings()
    logs.install(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            migrate.upgrade(settings.database_url)  # a no-op at head, so a role that owns no table can run it
        tenancy.warn_if_rls_bypassed(get_engine(settings.database_url))
        queue.warm(settings)
        # Anything a crashed API left unsent in the outbox goes out now.
        with get_sessionmaker(settings.database_url)() as session:
            relay.relay(session, settings)
            if not auth_service.any_key(session):
                log.warning("no API keys yet: every request will be a 401; make one with "
                            "`factory keys create --tenant NAME`")
        yield
        multiprocess.process_exited()  # one of several API processes: its live gauges stop counting

    app = FastAPI(title="Content Factory", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)

    # Starlette runs the middleware added last first: counting and timing every request (whatever
    # answers it) and binding its request id for the logs, then the API key check, then the request rate of
    # the key and its tenant, then idempotency (whose stored responses are per tenant, so it needs the
    # caller; it replays the body it spooled, within the largest body limit). Each route then applies
    # its own body limit, media type and strict decoding (factory.api.routing).
    app.add_middleware(IdempotencyMiddleware, settings=settings)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(AuthenticationMiddleware, settings=settings)
    app.add_middleware(ObservabilityMiddleware, routes_of=app)

    app.include_router(health.router)
    app.include_router(metrics.router)
    for domain in (jobs, admin, keys, files, batches, chat, templates, brands, campaigns, augmentation, provenance,
                   pipelines, verify):
        app.include_router(domain.router, dependencies=[Depends(get_principal)], responses=openapi.AUTHENTICATED)
    routing.check_routes(app)
    openapi.install(app, settings)
    return app
