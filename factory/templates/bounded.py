"""Jinja2's immutable sandbox, made to count: the environment every template renders in.

The stock sandbox stops reaching into Python internals and caps ``range`` at 100,000
items, but not what a template computes or prints. ``BoundedSandbox`` adds the checks of
``factory.templates.budget`` at every place a template can make work:

- binary operators ``*``, ``**``, ``%`` and ``+`` (foreseen before they run);
- calls (methods, macros, ``caller()``) and every filter: a step each, integer arguments
  capped, ``join``/``replace``/``format``/padding foreseen, the result's size checked;
- the template itself is rewritten before it is compiled: every loop's iterable is
  counted, every loop, macro and call-block body charges its static text each time it
  runs, every printed expression is charged, and ``a ~ b`` checks the joined length.

``lipsum`` is dropped from the globals (its size is an argument and its text random).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from factory.templates import budget

_HERE = "factory.templates.budget"
_REPEATING = (nodes.For, nodes.Macro, nodes.CallBlock)


def _helper(name: str, *args: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.ImportedName(f"{_HERE}.{name}"), list(args), [], None, None)


def _static_chars(body: list[nodes.Node]) -> int:
    """The template text a body prints per pass, not counting bodies that repeat on their own."""
    total = 0
    stack: list[nodes.Node] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, _REPEATING):
            continue
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        stack.extend(node.iter_child_nodes())
    return total


class _Counters(NodeTransformer):
    """Wraps printed expressions in ``emit`` and turns ``a ~ b`` into ``concat(a, b)``."""

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [n if isinstance(n, nodes.TemplateData) else _helper("emit", n) for n in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _helper("concat", *node.nodes)


def rewrite(tree: nodes.Template) -> nodes.Template:
    """Put the budget's counters into a parsed template and return it."""
    for loop in list(tree.find_all(nodes.For)):
        assert isinstance(loop, nodes.For)
        loop.iter = _helper("counted", loop.iter)  # type: ignore[arg-type]  # an Expr, typed as Node
    blocks: list[nodes.Template | nodes.For | nodes.Macro | nodes.CallBlock] = [tree]
    blocks += [b for b in tree.find_all(_REPEATING) if isinstance(b, _REPEATING)]
    for block in blocks:
        block.body.insert(0, nodes.ExprStmt(_helper("charge", nodes.Const(_static_chars(block.body)))))
    counted: nodes.Template = _Counters().visit(tree)
    return counted


# Filters whose integer arguments size their result (widths, counts of lines or groups).
_SIZING_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})


def _foresee_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Checks of one filter call that must happen before it runs; may return materialized args."""
    if name in _SIZING_FILTERS:
        budget.check_int_args((*args, *kwargs.values()))
    values = [a for a in args if not isinstance(a, Context | ImmutableSandboxedEnvironment)
              and type(a).__name__ != "EvalContext"]
    if name == "join" and values:
        separator = values[1] if len(values) > 1 else kwargs.get("d", "")
        items = budget.foresee_join(values[0], str(separator))
        return tuple(items if a is values[0] else a for a in args)
    if name == "replace" and len(values) >= 3:
        budget.foresee_replace(str(values[0]), str(values[1]), str(values[2]),
                               values[3] if len(values) > 3 and isinstance(values[3], int) else -1)
    elif name == "format" and values and isinstance(values[0], str):
        budget.check_format(values[0])
    elif name == "indent" and values:
        width = values[1] if len(values) > 1 else kwargs.get("width", 4)
        pad = width if isinstance(width, int) else len(str(width))
        budget.active().size(len(str(values[0])) * (1 + pad), "an indented value")
    elif name == "wordwrap" and values:
        wrap = values[4] if len(values) > 4 else kwargs.get("wrapstring") or "\n"
        budget.active().size(len(str(values[0])) * (1 + len(str(wrap))), "a wrapped value")
    return args


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps jinja_pass_arg, so the compiler passes the same context
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget.active().step()
        args = _foresee_filter(name, args, kwargs)
        return budget.check_result(func(*args, **kwargs))

    return bounded


def _foresee_method(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Checks of a method call (``s.ljust(n)``, ``n.to_bytes(k)``...) before it runs.

    A method's integer arguments are widths, lengths or positions, none of which needs to be
    larger than a value may be; ``format`` is the exception: its arguments are what it prints.
    """
    target = getattr(func, "__wrapped__", func)
    owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
    if owner is None or isinstance(owner, ModuleType):
        return args
    if name not in ("format", "format_map"):
        budget.check_int_args((*args, *kwargs.values()))
    if not isinstance(owner, str):
        return args
    if name in ("format", "format_map"):
        budget.check_format(owner)
    elif name == "join" and args:
        return (budget.foresee_join(args[0], owner), *args[1:])
    elif name == "replace" and len(args) >= 2:
        budget.foresee_replace(owner, str(args[0]), str(args[1]), args[2] if len(args) > 2 else -1)
    elif name == "expandtabs":
        budget.foresee_expandtabs(owner, args[0] if args else 8)
    return args


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget.foresee_binop(operator, left, right)
        return budget.check_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget.active().step()
        if getattr(__obj, "__module__", None) == _HERE:  # the counters the rewrite put in
            return __context.call(__obj, *args, **kwargs)
        args = _foresee_method(__obj, args, kwargs)
        return budget.check_result(super().call(__context, __obj, *args, **kwargs))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return rewrite(super()._parse(source, name, filename))

    def parse_as_written(self, source: str) -> nodes.Template:
        """The template's tree before the rewrite: what its author wrote."""
        return super()._parse(source, None, None)
