"""Sandboxed Jinja2 prompt templates over a recipient record.

Templates are user input, so they run in Jinja2's immutable sandbox (no access
to Python internals, no mutation), with ``StrictUndefined`` (a missing variable
is an error, never an empty string) and no autoescape (the output is a prompt,
not HTML). Variables are the record's top-level fields.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from factory.errors import InvalidInput
from factory.templates.bounded import BoundedSandbox
from factory.templates.budget import BudgetExceeded, RenderBudget, bound, current

_env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, auto_reload=False)


# Recipient fields are data: in a campaign prompt every value a template prints is
# made one line, stripped of the delimiters and wrapped in « », and the system
# prompt says that text inside « » is data, never instructions. A value can
# therefore neither add a line of its own nor close the delimiter it sits in.
DATA_OPEN, DATA_CLOSE = "«", "»"
MAX_DATA_VALUE_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: Any) -> str:
    """A value as one line of plain text: no control characters or line breaks, no delimiters, capped."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(" ", text).replace(DATA_OPEN, "").replace(DATA_CLOSE, "")
    text = " ".join(text.split())
    if len(text) > MAX_DATA_VALUE_CHARS:
        text = text[: MAX_DATA_VALUE_CHARS - 1] + "…"
    return text


def as_data(value: Any) -> str:
    return f"{DATA_OPEN}{one_line(value)}{DATA_CLOSE}"



_data_env = BoundedSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, auto_reload=False, finalize=as_data
)


@functools.lru_cache(maxsize=64)
def _compiled(source: str, as_data: bool) -> Template:
    return (_data_env if as_data else _env).from_string(source)


def _short(msg: str) -> str:
    return msg if len(msg) <= 160 else msg[:157] + "..."


# A template that only prints record fields between literal text: (is_field, text) parts.
Substitution = tuple[tuple[bool, str], ...]


def _substitution(ast: nodes.Template) -> Substitution | None:
    """The parts of a template made only of literal text and ``{{ name }}``, else None."""
    parts: list[tuple[bool, str]] = []
    for output in ast.body:
        if not isinstance(output, nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append((False, node.data))
            elif isinstance(node, nodes.Name) and node.ctx == "load":
                parts.append((True, node.name))
            else:
                return None
    return tuple(parts)


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    variables: frozenset[str]
    sha256: str
    # Set for substitution-only templates, which render without Jinja (the same text: see
    # tests/unit/test_template_substitution.py); anything else runs in the bounded sandbox.
    substitution: Substitution | None = None

    def _substitute(self, parts: Substitution, record: Mapping[str, Any], budget: RenderBudget,
                    delimit: bool) -> str | None:
        """Jinja's output for a substitution-only template, or None when a field is missing (Jinja
        then names it, or prints a global of the same name)."""
        out: list[str] = []
        for is_field, text in parts:
            if not is_field:
                out.append(text)
                continue
            if text not in record:
                return None
            value = record[text]
            budget.produce(len(value) if isinstance(value, str) else 16)
            out.append(as_data(value) if delimit else str(value))
        return "".join(out)

    def render(self, record: Mapping[str, Any], *, field: str = "audience", as_data: bool = False) -> str:
        """The prompt for one record; ``as_data`` delimits every printed value (campaign prompts).

        Rendering counts against the request's ``RenderBudget`` (``budget.bound``); the prompt is
        at most its ``max_output_chars`` bytes of UTF-8.
        """
        budget = current()
        if budget is None:  # a render on its own: a budget of its own
            with bound(RenderBudget()):
                return self.render(record, field=field, as_data=as_data)
        budget.start_record()
        try:
            text = None
            if self.substitution is not None:
                text = self._substitute(self.substitution, record, budget, as_data)
            if text is None:
                text = _compiled(self.source, as_data).render(dict(record))
        except BudgetExceeded as exc:
            raise InvalidInput(f"{exc} ({field})", field=field) from None
        except RecursionError:
            raise InvalidInput(f"template recursed too deeply ({field})", field=field) from None
        except MemoryError:
            raise InvalidInput(f"template needed too much memory ({field})", field=field) from None
        except SecurityError as exc:
            raise InvalidInput("template tried an operation the sandbox forbids", field="template") from exc
        except UndefinedError as exc:
            raise InvalidInput(f"template refers to a missing value: {_short(str(exc))}", field=field) from exc
        except TemplateError as exc:
            raise InvalidInput(f"template failed to render: {_short(str(exc))}", field="template") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise InvalidInput(f"template failed to render ({type(exc).__name__})", field=field) from exc
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > budget.max_output_chars:
            raise InvalidInput(f"the rendered prompt is {size} bytes, more than the {budget.max_output_chars} "
                               f"a prompt may have ({field})", field=field)
        return text


def compile_template(source: str, *, field: str = "template", registered: bool = False) -> CompiledTemplate:
    """Parse once, list the variables it reads, and fingerprint it for provenance.

    ``registered`` templates (``/v1/templates``) are also checked statically for
    anything that reaches outside the record, so a bad one is refused when it is
    saved rather than when a campaign renders it.
    """
    try:
        ast = _env.parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidInput(
            f"template syntax error at line {exc.lineno}: {_short(exc.message or 'invalid syntax')}",
            field=field,
        ) from exc
    if registered:
        _refuse_reaching_outside(ast, field)
    variables = frozenset(meta.find_undeclared_variables(ast))
    return CompiledTemplate(
        source=source, variables=variables, sha256=hashlib.sha256(source.encode()).hexdigest(),
        substitution=_substitution(_env.parse_as_written(source)),
    )


def _refuse_reaching_outside(ast: nodes.Template, field: str) -> None:
    """Refuse at registration what the sandbox would refuse at render time, and more.

    A template reads the record's fields and nothing else: no private or dunder
    attributes, no other templates (include/import/extends).
    """
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Include, nodes.Import, nodes.FromImport,
                              nodes.Extends)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise InvalidInput(f"template reads the attribute '{node.attr}', which is outside the record",
                               field=field)
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            raise InvalidInput(f"template reads the key '{node.arg.value}', which is outside the record",
                               field=field)
        if isinstance(node, nodes.Include | nodes.Import | nodes.FromImport | nodes.Extends):
            raise InvalidInput("template includes or imports other templates, which is not allowed",
                               field=field)
