"""What the OpenAPI document (``/openapi.json``) says beyond the route signatures: the error
responses, in one place, and the values only this deployment's settings know.

Client generators and API gateways read the document, and the conformance test
(tests/security/test_openapi_conformance.py) holds the live API to it: every status
a route answers is declared here, with the one error body every error has.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from factory.api.routing import URL_PARAM_PATTERN
from factory.config import SETTING_MAXIMUM_MARK, Settings
from factory.models import registry
from factory.models.registry import MODEL_NAME_MARK


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorObject(BaseModel):
    code: str
    message: str
    field: str | None
    param: str | None
    type: Literal["invalid_request_error", "server_error"]
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """``{"error": {...}}``, the OpenAI error shape: ``field`` (= ``param``) names what was wrong."""

    error: ErrorObject


def _error(description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                               for name, text in headers.items()}
    return response


Responses = dict[int | str, dict[str, Any]]

# Every route behind an API key (applied per router in create_app).
AUTHENTICATED: Responses = {
    401: _error("No usable API key: missing, malformed, unknown, revoked or expired.",
                **{"WWW-Authenticate": "The Bearer challenge."}),
    403: _error("The API key lacks the scope this request needs."),
    413: _error("The request body is over the size limit."),
    422: _error("Invalid input: `error.field` names the problem."),
    429: _error("A rate limit or quota was hit.", **{"Retry-After": "Seconds to wait before retrying."}),
    503: _error("The database, the broker or the object store is unavailable; retry shortly.",
                **{"Retry-After": "Seconds to wait before retrying."}),
}
# A route that names a resource (in its path, or a cursor or id in its query or body).
NOT_FOUND: Responses = {404: _error("No such resource for this tenant.")}
# A route that reads a request body.
BODY: Responses = {
    400: _error("The body could not be read (broken encoding or multipart)."),
    415: _error("The body's content type is not the one this route reads."),
}
# A route whose resource may be in a state that refuses the request.
CONFLICT: Responses = {409: _error("The resource's current state refuses this request.")}
# A synchronous completion: the API waits for a worker to answer it.
CHAT_ERRORS: Responses = {
    500: _error("The model failed on this request; try again."),
    504: _error("No worker answered in time; the request was cancelled."),
}


def content(*media_types: str) -> Responses:
    """A 200 whose body is not JSON (a stream, a download), in each of ``media_types``; with ``response_class=Response``
    on the route, so the document does not also claim JSON."""
    return {200: {"description": "Successful Response",
                  "content": {media_type: {"schema": {"type": "string"}} for media_type in media_types}}}


def _complete(node: Any, settings: Settings) -> None:
    """Put what ``settings`` decide where the schemas mark it (the model enum, limits); close the dicts whose
    keys pydantic checks (it writes their key pattern as ``patternProperties``, which admits any other key);
    write an integer's bounds as integers (FastAPI writes ``1.0``, and a client reading it sends ``3.0``,
    which a strict integer refuses)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if isinstance(node.get(bound), float) and node[bound].is_integer():
                    node[bound] = int(node[bound])
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        if node.pop(MODEL_NAME_MARK, False):
            node["enum"] = registry.allowed_models(settings.model_allowlist)
        if SETTING_MAXIMUM_MARK in node:
            node["maximum"] = min(node.get("maximum", math.inf), getattr(settings, node.pop(SETTING_MAXIMUM_MARK)))
        for value in node.values():
            _complete(value, settings)
    elif isinstance(node, list):
        for value in node:
            _complete(value, settings)


def _state_url_param_rule(document: dict[str, Any]) -> None:
    """String path and query parameters refuse control characters (``factory.api.routing``): say so."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schemas = [parameter.get("schema", {}), *parameter.get("schema", {}).get("anyOf", [])]
                for schema in schemas:
                    if schema.get("type") == "string" and "enum" not in schema:
                        schema.setdefault("pattern", URL_PARAM_PATTERN)


def install(app: FastAPI, settings: Settings) -> None:
    """Build the document once, on first request, with this deployment's models and limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _complete(document, settings)
            _state_url_param_rule(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
