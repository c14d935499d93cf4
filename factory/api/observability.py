"""The outermost middleware: every request is counted and timed by route, and logs its request id.

Counted by the route's template (``/v1/jobs/{job_id}``), never the path itself, so ids make no new
series; a request no route matches is ``unmatched``, a method outside HTTP's own is ``other``. The
request id (also sent back as ``X-Request-ID``) is bound in the log context for the whole request,
so every line logged while it runs, uvicorn's access line included, names it; the API key check binds
the tenant next to it (factory.api.authentication).
"""

from __future__ import annotations

import re
import secrets
import time

from fastapi.routing import iter_route_contexts
from starlette.applications import Starlette
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factory import log_context
from factory.metrics.definitions import HTTP_DURATION, HTTP_REQUESTS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_ID_HEADER = b"x-request-id"


class RouteTemplates:
    """The app's route templates, matched against a request's path in the order the app routes in."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def of(self, path: str) -> str:
        if self._compiled is None:  # built on the first request, once every router is included
            self._compiled = [(compile_path(str(c.path))[0], str(c.path))
                              for c in iter_route_contexts(self.app.routes) if c.path]
        return next((template for regex, template in self._compiled if regex.match(path)), "unmatched")


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, routes_of: Starlette) -> None:
        self.app = app
        self.routes = RouteTemplates(routes_of)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        status = 500  # what a request that raised before answering becomes

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REQUEST_ID_HEADER, request_id.encode())]}
            await send(message)

        started = time.perf_counter()
        with log_context.scope(request_id=request_id):
            try:
                await self.app(scope, receive, send_counted)
            finally:
                method = scope["method"] if scope["method"] in METHODS else "other"
                route = self.routes.of(scope["path"])
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
