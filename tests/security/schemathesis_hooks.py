"""Schemathesis hooks for tests/security/test_openapi_conformance.py (named in its config).

The one gap between the document and the API that JSON Schema cannot close: under OpenAPI 3.1
(JSON Schema 2020-12) ``3.0`` is an integer, and schemathesis sends it for integer fields, but every
body here is validated strictly, and a strict integer is spelled without a fraction. Bodies go out with
their whole floats as integers (which keeps an invalid body invalid: ``3`` breaks a string as ``3.0`` does).
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _whole_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_floats_as_ints(item) for item in value]
    return value


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    return _whole_floats_as_ints(body)
