"""Strict JSON: the one decoder for every request body and every JSONL line a client sends.

Python's ``json`` (and most parsers) quietly accept what different readers of the same
bytes understand differently, or what breaks later steps: duplicate object keys (the
last one wins here, the first one in a proxy or an audit log), lone UTF-16 surrogates
(``"\\ud800"``: no UTF-8 encoding exists, so writing or echoing it fails), NUL
characters (PostgreSQL text refuses them, C strings end at them), ``NaN`` and
``Infinity`` (not JSON at all), numbers no column holds (``1e400`` is infinite, a
5,000-digit integer costs quadratic time to convert), and nesting deep enough to exhaust
the parser's stack. ``decode`` refuses all of them with ``InvalidJSON``, whose ``field``
is the JSON path of the offence (``audience[3].city``), never the value.

Cost: the C scanner does the parsing; the hooks mark what they refuse, and the tree is
walked in Python only when a mark was made, the text holds a ``\\u`` escape (the only way
a NUL or a surrogate gets into valid UTF-8 JSON) or enough brackets to be deep. A typical
batch line takes none of these walks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from factory.config import Settings
from factory.errors import InvalidInput

# |n| of an integer: what a signed 64-bit column (or any seed, count or limit here) holds.
MAX_INT: Final = 2**63 - 1
_MAX_INT_CHARS: Final = len(str(MAX_INT)) + 1  # a sign
_FORBIDDEN_CHAR = re.compile("[\x00\ud800-\udfff]")
_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class InvalidJSON(InvalidInput):
    """``path``: where in the document ("" for the document itself), ``reason``: what is wrong there.
    As an API error, ``field`` is the path (or "body") and the message "field: reason"."""

    code = "invalid_json"

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{path or 'body'}: {reason}", field=path or "body")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class JSONLimits:
    """``max_depth``: the deepest nesting of arrays and objects (the top-level value is depth 1);
    by default the ``json_max_depth`` setting's default."""

    max_depth: int = Settings.model_fields["json_max_depth"].default


class _Refused:
    """A value the hooks refused, kept in the tree so the walk can say where it was."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


# An object with a repeated key carries this extra (non-string, so never a JSON) key -> the repeated key.
_DUPLICATE: Final = object()


def path_key(key: str) -> str:
    """A key as it may appear in an error's field: itself when it is a plain name, else ``<key>`` (a key
    the client chose may be long or hold anything, and a field is echoed)."""
    return key if _SAFE_KEY.fullmatch(key) else "<key>"


def join_path(parent: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{parent}[{part}]"
    return f"{parent}.{path_key(part)}" if parent else path_key(part)


class _Decoder:
    def __init__(self, limits: JSONLimits) -> None:
        self.limits = limits
        self.marked = False

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
        obj: dict[Any, Any] = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    obj[_DUPLICATE] = key
                    break
                seen.add(key)
            self.marked = True
        return obj

    def constant(self, name: str) -> _Refused:
        self.marked = True
        return _Refused("not a JSON number (numbers are finite and written in digits)")

    def integer(self, text: str) -> int | _Refused:
        if len(text) > _MAX_INT_CHARS or abs(value := int(text)) > MAX_INT:
            self.marked = True
            return _Refused(f"integers must be within ±{MAX_INT}")
        return value

    def real(self, text: str) -> float | _Refused:
        value = float(text)
        if not math.isfinite(value):
            self.marked = True
            return _Refused("numbers must be finite (this one is too large)")
        return value


def decode(raw: bytes | str, limits: JSONLimits | None = None) -> Any:
    """The value ``raw`` holds (UTF-8 bytes or text), or ``InvalidJSON`` naming where it breaks a rule."""
    limits = limits or JSONLimits()
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("not valid UTF-8") from None
    else:
        text = raw
    decoder = _Decoder(limits)
    try:
        value = json.loads(text, object_pairs_hook=decoder.pairs, parse_constant=decoder.constant,
                           parse_int=decoder.integer, parse_float=decoder.real)
    except json.JSONDecodeError:
        raise InvalidJSON("not valid JSON") from None
    except RecursionError:
        raise InvalidJSON(f"nested deeper than {limits.max_depth} levels") from None
    if decoder.marked or "\\u" in text or text.count("[") + text.count("{") > limits.max_depth:
        _check(value, "", 1, limits)
    return value


def _check(value: Any, path: str, depth: int, limits: JSONLimits) -> None:
    if isinstance(value, str):
        if _FORBIDDEN_CHAR.search(value):
            raise InvalidJSON("strings must not hold NUL characters or lone surrogates", path)
        return
    if isinstance(value, _Refused):
        raise InvalidJSON(value.reason, path)
    if not isinstance(value, dict | list):
        return
    if depth > limits.max_depth:
        raise InvalidJSON(f"nested deeper than {limits.max_depth} levels", path)
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, join_path(path, i), depth + 1, limits)
        return
    if _DUPLICATE in value:
        raise InvalidJSON("the key appears more than once in its object", join_path(path, value[_DUPLICATE]))
    for key, item in value.items():
        if _FORBIDDEN_CHAR.search(key):
            raise InvalidJSON("keys must not hold NUL characters or lone surrogates", path)
        _check(item, join_path(path, key), depth + 1, limits)


def decode_record(text: str, where: str, field: str) -> dict[str, Any]:
    """One line of an uploaded JSONL file that must hold a JSON object (a record or a row); otherwise an
    ``InvalidInput`` naming ``where`` ("JSONL line 3") and what breaks there, with ``field``."""
    try:
        value = decode(text)
    except InvalidJSON as exc:
        at = f" at {exc.path}: " if exc.path else " is "
        raise InvalidInput(f"{where}{at}{exc.reason}", field=field) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} is not a JSON object", field=field)
    return value
