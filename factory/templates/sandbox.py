"""Sandboxed Jinja2 prompt templates over a recipient record.

Templates are user input, so they run in Jinja2's immutable sandbox (no access
to Python internals, no mutation), with ``StrictUndefined`` (a missing variable
is an error, never an empty string) and no autoescape (the output is a prompt,
not HTML). Variables are the record's top-level fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from factory.errors import InvalidInput

_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, auto_reload=False
)


def _short(msg: str) -> str:
    return msg if len(msg) <= 160 else msg[:157] + "..."


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    variables: frozenset[str]
    sha256: str

    def render(self, record: Mapping[str, Any], *, field: str = "audience") -> str:
        try:
            return _env.from_string(self.source).render(dict(record))
        except SecurityError as exc:
            raise InvalidInput("template tried an operation the sandbox forbids", field="template") from exc
        except UndefinedError as exc:
            raise InvalidInput(f"template refers to a missing value: {_short(str(exc))}", field=field) from exc
        except TemplateError as exc:
            raise InvalidInput(f"template failed to render: {_short(str(exc))}", field="template") from exc
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise InvalidInput(f"template failed to render ({type(exc).__name__})", field=field) from exc


def compile_template(source: str, *, field: str = "template") -> CompiledTemplate:
    """Parse once, list the variables it reads, and fingerprint it for provenance."""
    try:
        ast = _env.parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidInput(
            f"template syntax error at line {exc.lineno}: {_short(exc.message or 'invalid syntax')}",
            field=field,
        ) from exc
    variables = frozenset(meta.find_undeclared_variables(ast))
    return CompiledTemplate(
        source=source, variables=variables, sha256=hashlib.sha256(source.encode()).hexdigest()
    )
