"""create_app(): routers, middleware, exception handlers, start-up work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from factory import __version__
from factory.api import errors, routing
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

    # Replays the body it spooled (within the largest body limit); each route then applies its own
    # limit, media type and strict decoding (factory.api.routing).
    app.add_middleware(IdempotencyMiddleware, settings=settings)

    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(admin.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(chat.router)
    app.include_router(templates.router)
    app.include_router(brands.router)
    app.include_router(campaigns.router)
    app.include_router(augmentation.router)
    routing.check_routes(app)
    return app
