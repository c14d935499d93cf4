"""What the worker's grammar can enforce, checked at submit: a schema that passes here makes every
constrained output parse and validate against it.

Only keywords the grammar enforces are accepted (plus annotations, which change nothing);
anything else (``not``, ``if``, ``uniqueItems``, ``oneOf``, ``multipleOf``, ...) would be
quietly ignored by the grammar and let the model write records the schema refuses, so it is
refused here with a 422 naming its path. ``$ref`` must point inside the schema
(``#``, ``#/$defs/...``, ``#/definitions/...``) to something that is there. The size (compact
JSON bytes) and the nesting depth of subschemas are capped by settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from factory.config import Settings
from factory.errors import InvalidInput
from factory.provenance.hashing import schema_sha256
from factory.strict_json import join_path
from factory.structured.schemas import ResponseFormat

ANNOTATIONS: Final = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                                "deprecated", "readOnly", "writeOnly"})
TYPES: Final = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
FORMATS: Final = frozenset({"date", "time", "date-time", "duration", "email", "uuid", "uri", "ipv4", "ipv6",
                            "hostname"})
MAX_PATTERN_CHARS: Final = 1000
# Subschemas under a name (properties, $defs), in a list (anyOf, prefixItems), or alone (items).
_MAPS: Final = ("properties", "$defs", "definitions")
_LISTS: Final = ("anyOf", "prefixItems")
_SINGLE: Final = ("items", "additionalProperties")
_COUNTS: Final = ("minLength", "maxLength", "minItems", "maxItems")
_BOUNDS: Final = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_LOCAL_REF = re.compile(r"#(?:/(\$defs|definitions)/([^/]+))?")
SUPPORTED: Final = frozenset({"type", "enum", "const", "required", "pattern", "format", "$ref",
                              *_MAPS, *_LISTS, *_SINGLE, *_COUNTS, *_BOUNDS}) | ANNOTATIONS
SCHEMA_FIELD: Final = "response_format.json_schema.schema"
# The codes an item fails with when its structured output is not a finished document (the worker writes
# "code: message"): cut off by max_tokens, or (never expected while the grammar holds) not valid JSON.
INCOMPLETE: Final = "structured_output_incomplete"
INVALID: Final = "structured_output_invalid"


def output_format(response_format: ResponseFormat | None, settings: Settings) -> dict[str, Any] | None:
    """What a generation request carries for the worker (``item.request["response_format"]``), or None for
    free text: ``{"type": "json_object"}`` or ``{"type": "json_schema", "name", "strict", "schema",
    "schema_sha256"}``. Raises InvalidInput naming the path of what the grammar cannot enforce."""
    if response_format is None or response_format["type"] == "text":
        return None
    if response_format["type"] == "json_object":
        return {"type": "json_object"}
    spec = response_format["json_schema"]
    schema = spec.get("schema")
    if schema is None:
        raise InvalidInput(f"{SCHEMA_FIELD} is required here: constrained decoding needs a schema "
                           "(or use response_format type json_object)", field=SCHEMA_FIELD)
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > settings.structured_schema_max_bytes:
        raise InvalidInput(f"{SCHEMA_FIELD}: larger than {settings.structured_schema_max_bytes} bytes "
                           "as compact JSON", field=SCHEMA_FIELD)
    _SchemaWalk(schema, settings.structured_schema_max_depth).check(schema, SCHEMA_FIELD, 0)
    return {"type": "json_schema", "name": spec["name"], "strict": bool(spec.get("strict")), "schema": schema,
            "schema_sha256": schema_sha256(schema)}


def _fail(path: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{path[:200]}: {reason}", field=path[:200])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _SchemaWalk:
    def __init__(self, root: dict[str, Any], max_depth: int) -> None:
        self.root = root
        self.max_depth = max_depth
        self.checks: dict[str, Callable[[Any, str, int], None]] = {
            **dict.fromkeys(_MAPS, self._map), **dict.fromkeys(_LISTS, self._list),
            "items": self._single, "additionalProperties": self._single,
            **dict.fromkeys(_COUNTS, self._count), **dict.fromkeys(_BOUNDS, self._bound),
            "type": self._type, "enum": self._enum, "required": self._required, "pattern": self._pattern,
            "format": self._format, "$ref": self._ref,
        }

    def check(self, schema: Any, path: str, depth: int) -> None:
        if not isinstance(schema, dict):
            raise _fail(path, "a schema must be a JSON object")
        if depth > self.max_depth:
            raise _fail(path, f"subschemas nest deeper than {self.max_depth} levels")
        for key, value in schema.items():
            where = f"{path}.{key}" if key in SUPPORTED else join_path(path, key)  # "$defs", not "<key>"
            if key in ANNOTATIONS or key == "const":
                continue
            check = self.checks.get(key)
            if check is None:
                raise _fail(where, "keyword not supported by constrained decoding (see the list in the docs)")
            check(value, where, depth)
        self._satisfiable(schema, path)

    @staticmethod
    def _satisfiable(schema: dict[str, Any], path: str) -> None:
        """Bounds the grammar cannot meet, and required names a closed object does not declare."""
        for low, high in (("minLength", "maxLength"), ("minItems", "maxItems"), ("minimum", "maximum")):
            if low in schema and high in schema and schema[low] > schema[high]:
                raise _fail(f"{path}.{low}", f"is greater than {high}")
        declared = schema.get("properties", {})
        if schema.get("additionalProperties") is not True and not isinstance(schema.get("additionalProperties"), dict):
            for name in schema.get("required", []):
                if name not in declared:
                    raise _fail(f"{path}.required", "names a property that properties does not declare")

    def _map(self, value: Any, path: str, depth: int) -> None:
        if not isinstance(value, dict):
            raise _fail(path, "must be an object of schemas")
        for name, sub in value.items():
            self.check(sub, join_path(path, name), depth + 1)

    def _list(self, value: Any, path: str, depth: int) -> None:
        if not isinstance(value, list) or not value:
            raise _fail(path, "must be a non-empty array of schemas")
        for i, sub in enumerate(value):
            self.check(sub, join_path(path, i), depth + 1)

    def _single(self, value: Any, path: str, depth: int) -> None:
        if not isinstance(value, bool):
            self.check(value, path, depth + 1)

    def _count(self, value: Any, path: str, depth: int) -> None:
        if not _is_count(value):
            raise _fail(path, "must be a non-negative integer")

    def _bound(self, value: Any, path: str, depth: int) -> None:
        if not _is_number(value):
            raise _fail(path, "must be a number")

    def _type(self, value: Any, path: str, depth: int) -> None:
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n in TYPES for n in names) or len(set(names)) < len(names):
            raise _fail(path, "must be one of " + ", ".join(sorted(TYPES)) + " or a list of distinct ones")

    def _enum(self, value: Any, path: str, depth: int) -> None:
        if not isinstance(value, list) or not value:
            raise _fail(path, "must be a non-empty array")

    def _required(self, value: Any, path: str, depth: int) -> None:
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise _fail(path, "must be an array of property names")

    def _pattern(self, value: Any, path: str, depth: int) -> None:
        if not isinstance(value, str) or len(value) > MAX_PATTERN_CHARS:
            raise _fail(path, f"must be a regular expression of at most {MAX_PATTERN_CHARS} characters")
        try:
            re.compile(value)
        except re.error:
            raise _fail(path, "is not a valid regular expression") from None

    def _format(self, value: Any, path: str, depth: int) -> None:
        if value not in FORMATS:
            raise _fail(path, "format not supported by constrained decoding; supported: " + ", ".join(sorted(FORMATS)))

    def _ref(self, value: Any, path: str, depth: int) -> None:
        match = _LOCAL_REF.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise _fail(path, "only local references are supported: #, #/$defs/NAME or #/definitions/NAME")
        section, name = match.groups()
        if section is not None:
            defs = self.root.get(section)
            if not isinstance(defs, dict) or name.replace("~1", "/").replace("~0", "~") not in defs:
                raise _fail(path, "points to no definition in this schema")
