"""create_app(): routers, middleware, exception handlers, start-up work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from factory import __version__
from factory.api import errors, openapi
from factory.api.authentication import AuthenticationMiddleware
from factory.api.deps import get_principal
from factory.api.idempotency import IdempotencyMiddleware
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
    templates,
)
from factory.config import Settings, get_settings
from factory.db import migrate
from factory.db.session import get_sessionmaker
from factory.outbox import relay

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            migrate.upgrade(settings.database_url)
        # Anything a crashed API left unsent in the outbox goes out now.
        with get_sessionmaker(settings.database_url)() as session:
            relay.relay(session, settings)
        yield

    app = FastAPI(title="Content Factory", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)

    # Starlette runs the middleware added last first: the size limit below, then the API key check,
    # then idempotency (whose stored responses are per tenant, so it needs the caller).
    app.add_middleware(IdempotencyMiddleware, settings=settings)
    app.add_middleware(AuthenticationMiddleware, settings=settings)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        # File uploads (multipart, streamed to a temporary file) may be as large as a batch file.
        limit = (settings.batch_max_file_bytes + (1 << 20) if request.url.path == "/v1/files"
                 else settings.max_body_bytes)
        if length is not None and (not length.isdigit() or int(length) > limit):
            return JSONResponse(
                errors.error_body("body_too_large", f"request body is over {limit} bytes", "body", status=413),
                status_code=413,
            )
        return await call_next(request)

    app.include_router(health.router)
    for domain in (jobs, admin, keys, files, batches, chat, templates, brands, campaigns, augmentation):
        app.include_router(domain.router, dependencies=[Depends(get_principal)], responses=openapi.AUTHENTICATED)
    openapi.install(app, settings)
    return app
