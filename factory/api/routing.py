"""Strict input for every route, in one place: the route class every router is built with.

Before FastAPI (and pydantic) see a request body, ``StrictRoute``:

- reads it up to the route's size limit (a setting per router, checked against
  ``Content-Length`` before reading and counted while reading, so a chunked body cannot
  pass it): over it, 413;
- checks its media type: ``application/json`` (UTF-8) where the route takes JSON,
  ``multipart/form-data`` where it takes a form; anything else, 415;
- refuses control characters and lone surrogates in path and query parameters (422);
- decodes JSON with ``factory.strict_json`` (duplicate keys, lone surrogates, NUL, NaN,
  out-of-range numbers, deep nesting: 422 naming the JSON path), and parses a form with
  bounded parts (a malformed one: 422).

A POST route without a body parameter takes no body, or the empty object ``{}``: any
field is refused as unknown, like everywhere else.

``create_app`` refuses to start when a route was built without this class
(``check_routes``), so a new router cannot skip it: build routers with ``api_router``.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response, params
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from factory.config import Settings
from factory.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from factory.strict_json import JSONLimits, decode, path_key

# The settings that bound a body: one per router (``api_router(body_limit=...)``).
MAX_BODY = "max_body_bytes"
CHAT_BODY = "chat_max_body_bytes"
RESOURCE_BODY = "resource_max_body_bytes"
# A form (file upload) may carry a whole batch file: its limit is the file limit plus room for the parts' headers.
UPLOAD_BODY = "upload"
_FORM_HEADROOM = 1 << 20
_UNSAFE_PARAM = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# The same rule as the OpenAPI document states it for path and query parameters (JSON Schema's ECMA regex).
URL_PARAM_PATTERN = "^[^\\u0000-\\u001f\\u007f]*$"
# A form has one file and a few fields.
_MAX_FORM_FILES = 1
_MAX_FORM_FIELDS = 8


def body_limit(settings: Settings, name: str) -> int:
    return settings.batch_max_file_bytes + _FORM_HEADROOM if name == UPLOAD_BODY else int(getattr(settings, name))


class StrictRequest(Request):
    """A request whose body is read within ``limit`` bytes and whose JSON is decoded strictly."""

    def __init__(self, request: Request, limit: int, json_limits: JSONLimits) -> None:
        super().__init__(request.scope, request.receive)
        self.limit = limit
        self.json_limits = json_limits

    async def stream(self) -> AsyncGenerator[bytes, None]:
        size = 0
        async for chunk in super().stream():
            size += len(chunk)
            if size > self.limit:
                raise _too_large(self.limit)
            yield chunk

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode(await self.body(), self.json_limits)
        return self._json


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is over this endpoint's limit of {limit} bytes", field="body")


def _media_type(request: Request) -> tuple[str, str | None]:
    header = request.headers.get("content-type")
    if not header:
        return "", None
    message = email.message.Message()
    message["content-type"] = header
    return message.get_content_type(), message.get_param("charset")  # type: ignore[return-value]


class StrictRoute(APIRoute):
    """See the module's docstring. ``body_limit_setting`` names the Settings field bounding the body."""

    body_limit_setting = MAX_BODY

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        takes_form = self.body_field is not None and _is_form(self)
        takes_json = self.body_field is not None and not takes_form

        async def strict_handler(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            limit = body_limit(settings, self.body_limit_setting)
            if self.body_field is None:  # at most "{}"
                limit = min(limit, settings.resource_max_body_bytes)
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise _too_large(limit)
            _check_url_params(request)
            strict = StrictRequest(request, limit, JSONLimits(max_depth=settings.json_max_depth))
            if takes_form:
                await _read_form(strict)
            elif request.method in ("POST", "PUT", "PATCH"):
                await _read_json(strict, empty_object_only=not takes_json)
            return await handle(strict)

        return strict_handler


def _check_url_params(request: Request) -> None:
    """Path and query parameters: no control characters (NUL included) and no lone surrogates, which
    no id, name or cursor holds and which PostgreSQL refuses to compare (a 500, not a 404)."""
    params = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in params:
        if _UNSAFE_PARAM.search(name) or _UNSAFE_PARAM.search(str(value)):
            field = path_key(name)
            raise InvalidInput(f"{field}: control characters are not allowed in the URL", field=field)


def _is_form(route: APIRoute) -> bool:
    return route.body_field is not None and isinstance(route.body_field.field_info, params.Form)


async def _read_json(request: StrictRequest, *, empty_object_only: bool) -> None:
    body = await request.body()
    if not body:
        return  # no body: FastAPI says which field is missing, if any
    media_type, charset = _media_type(request)
    if not (media_type == "application/json" or (media_type.startswith("application/")
                                                   and media_type.endswith("+json"))):
        raise UnsupportedMediaType("the body must be JSON, sent as Content-Type: application/json",
                                   field="Content-Type")
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMediaType("JSON bodies are UTF-8 (RFC 8259); drop the charset or make it utf-8",
                                   field="Content-Type")
    value = await request.json()
    if empty_object_only and value != {}:
        if isinstance(value, dict):
            field = path_key(next(iter(value)))
            raise InvalidInput(f"unknown field '{field}': this endpoint takes no body", field=field)
        raise InvalidInput("this endpoint takes no body (or an empty object)", field="body")


async def _read_form(request: StrictRequest) -> None:
    media_type, _ = _media_type(request)
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType("the body must be sent as Content-Type: multipart/form-data",
                                   field="Content-Type")
    try:
        await request.form(max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS)
    except HTTPException:  # Starlette's translation of a malformed multipart body
        raise InvalidInput("the multipart body is malformed (or has more than one file or "
                           f"{_MAX_FORM_FIELDS} fields)", field="body") from None


def api_router(*, prefix: str, tags: list[str], body_limit: str = RESOURCE_BODY,
               responses: dict[int | str, dict[str, Any]] | None = None) -> APIRouter:
    """An APIRouter whose routes are ``StrictRoute``; ``body_limit``: the Settings field bounding its bodies;
    ``responses``: the error answers every route of it may give (``factory.api.openapi``)."""
    route_class = type(f"StrictRoute_{body_limit}", (StrictRoute,), {"body_limit_setting": body_limit})
    return APIRouter(prefix=prefix, tags=list(tags), route_class=route_class, responses=responses)


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[APIRoute, str, set[str]]]:
    """(route, full path, methods) of every API route, included routers flattened."""
    for context in iter_route_contexts(routes):
        if isinstance(context.original_route, APIRoute):
            yield context.original_route, str(context.path), set(context.methods or ())


def check_routes(app: FastAPI) -> None:
    """Refuse to build an app with a route that would read a body without the checks above."""
    loose = [f"{sorted(methods)} {path}" for route, path, methods in _api_routes(app.routes)
             if not isinstance(route, StrictRoute)]
    if loose:
        raise RuntimeError(f"routes not built with factory.api.routing.api_router: {', '.join(loose)}")


def post_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a request body (POST, PUT, PATCH): what strict input covers."""
    return sorted((method, path) for _, path, methods in _api_routes(routes)
                  for method in methods if method in ("POST", "PUT", "PATCH"))
