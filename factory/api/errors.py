"""The one place where errors become HTTP responses.

Validation messages name the field and never echo the submitted value back. The
body is ``{"error": {"code", "message", "field", "param", "type"}}``: ``param`` and
``type`` make it the OpenAI error shape too, which the ``openai`` SDK reads.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from factory.errors import FactoryError
from factory.logs import describe_exception
from factory.strict_json import join_path

log = logging.getLogger(__name__)


def error_body(code: str, message: str, field: str | None = None, details: list[Any] | None = None,
               status: int = 400) -> dict[str, Any]:
    """Our error shape, which is also OpenAI's: ``type``, ``param`` (= ``field``), ``code`` and ``message``."""
    err: dict[str, Any] = {"code": code, "message": message, "field": field, "param": field,
                           "type": "server_error" if status >= 500 else "invalid_request_error"}
    if details:
        err["details"] = details
    return {"error": err}


def _loc(loc: tuple[Any, ...]) -> str:
    """``audience[3].city``; a key that is not a plain name shows as ``<key>`` (it may be the hostile part)."""
    out = ""
    for p in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        out = out + "[key]" if p == "[key]" else join_path(out, p if isinstance(p, int) else str(p))
    return out or "body"


def allowed_methods(request: Request) -> str:
    """Every method some route of this path takes. Starlette's own ``Allow`` names only the first route
    that matched the path, and a path often has several (``GET /v1/files`` and ``POST /v1/files``)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.path and route.methods and compile_path(route.path)[0].match(request.url.path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(FactoryError)
    async def _factory_error(_: Request, exc: FactoryError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field, status=exc.status_code),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for e in exc.errors()[:20]:
            if e.get("type") == "json_invalid":
                details.append({"field": "body", "message": "body is not valid JSON", "type": "json_invalid"})
                continue
            # Deliberately drop 'input' and 'ctx': they carry the submitted value.
            details.append({"field": _loc(tuple(e.get("loc", ()))), "message": str(e.get("msg", "")),
                            "type": str(e.get("type", ""))})
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        return JSONResponse(error_body("invalid_input", message, first["field"], details, status=422),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: a 405 lists what the path allows
            headers["Allow"] = allowed_methods(request)
        return JSONResponse(error_body("http_error", str(exc.detail), status=exc.status_code),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        # A restart or an outage: nothing was written, the client may retry.
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSONResponse(error_body("database_unavailable", "the database is unavailable; retry shortly",
                                       status=503),
                            status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Type and frames, not the message: it may quote a submitted value (factory/logs.py).
        log.error("unhandled error: %s", describe_exception(exc))
        return JSONResponse(error_body("internal_error", "internal error", status=500), status_code=500)
