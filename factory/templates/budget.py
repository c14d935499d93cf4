"""What one request's template rendering may cost: steps, time and characters.

A template is user input that the API runs once per recipient, so a few bytes of it
(``{{ name * 50000000 }}``, nested loops, a doubling ``{% set %}``) could otherwise
make the server compute for minutes and store gigabytes. ``RenderBudget`` is shared by
every render of one request and counts:

- **steps**: loop iterations and calls (filters, methods, macros), across the request;
- **time**: a deadline for the whole request, checked at every step;
- **value size**: no string or list a template builds may exceed ``max_value_chars``,
  checked *before* the operation where the size can be foreseen (repetition, padding,
  ``replace``, ``join``, format widths, powers) and after it otherwise;
- **produced characters** per record: everything a render prints, into its output or
  into a ``{% set %}`` block or macro, is charged, and the output itself is capped.

Every overrun raises ``BudgetExceeded``; the sandbox turns it into a 422 naming the record.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import string
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInput

if TYPE_CHECKING:
    from factory.config import Settings

# A template may print into buffers ({% set %} blocks, macros) this many times what its output may hold.
PRODUCED_PER_OUTPUT = 4
_POW_MAX_BITS = 4096
_FORMAT_PERCENT = re.compile(r"%[#0\- +]*(\d*)(?:\.(\d*))?")
_DIGITS = re.compile(r"\d+")


class BudgetExceeded(Exception):
    """A render went over its budget; ``str(exc)`` says which part, without any record value."""


BASE_STEPS = 100_000
AMPLIFICATION_FLOOR_BYTES = 1024 * 1024
SECONDS_PER_RECORD = 0.001


@dataclass
class RenderBudget:
    """One request's budget; every record rendered adds ``steps_per_record`` steps and 1 ms to it."""

    max_value_chars: int = 64 * 1024
    max_output_chars: int = 32 * 1024
    steps_per_record: int = 2_000
    seconds: float = 5.0
    max_steps: int = BASE_STEPS
    steps: int = 0
    produced: int = 0
    deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderBudget:
        return cls(max_value_chars=settings.template_max_value_chars,
                   max_output_chars=settings.template_max_prompt_bytes,
                   steps_per_record=settings.template_steps_per_record, seconds=settings.template_render_seconds)

    def start_record(self) -> None:
        self.produced = 0
        self.max_steps += self.steps_per_record
        self.deadline += SECONDS_PER_RECORD

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise BudgetExceeded(f"template rendering took more than {self.max_steps} steps (loop iterations "
                                 "and calls) in this request")
        if time.monotonic() > self.deadline:
            raise BudgetExceeded("template rendering took longer than this request's time budget")

    def produce(self, chars: int) -> None:
        self.produced += chars
        if self.produced > PRODUCED_PER_OUTPUT * self.max_output_chars:
            raise BudgetExceeded(f"template printed more than {PRODUCED_PER_OUTPUT * self.max_output_chars} "
                                 "characters for one record")

    def size(self, n: int, what: str = "a value") -> None:
        if n > self.max_value_chars:
            raise BudgetExceeded(f"template built {what} longer than {self.max_value_chars} characters")


def check_amplification(settings: Settings, prompt_bytes: int, input_bytes: int, field: str) -> None:
    """Refuse prompts that total far more than the templates and records they were rendered from."""
    limit = settings.template_max_amplification * input_bytes + AMPLIFICATION_FLOOR_BYTES
    if prompt_bytes > limit:
        raise InvalidInput(f"the rendered prompts total {prompt_bytes} bytes, more than "
                           f"{settings.template_max_amplification} times the {input_bytes} bytes of template and "
                           "records they come from (plus 1 MiB); put text every recipient shares into "
                           "system_prompt", field=field)


_active: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar("render_budget", default=None)


def active() -> RenderBudget:
    """The budget of the render in progress (``CompiledTemplate.render`` makes sure there is one)."""
    budget = _active.get()
    if budget is None:
        raise RuntimeError("a template helper ran outside a render")
    return budget


def current() -> RenderBudget | None:
    return _active.get()


@contextlib.contextmanager
def bound(budget: RenderBudget) -> Iterator[RenderBudget]:
    """Every render inside the block counts against ``budget`` (one request's renders)."""
    token = _active.set(budget)
    try:
        yield budget
    finally:
        _active.reset(token)


def sized(value: Any) -> int:
    """The characters (or elements) a value holds, 0 for what has no length worth counting."""
    return len(value) if isinstance(value, str | bytes | list | tuple | dict | set | frozenset) else 0


def check_result(value: Any) -> Any:
    active().size(sized(value))
    return value


def check_int_args(args: Iterable[Any]) -> None:
    """No integer argument larger than a value may be (widths, counts, repeat factors)."""
    budget = active()
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > budget.max_value_chars:
            raise BudgetExceeded(f"template passed a number larger than {budget.max_value_chars}")


def check_format(fmt: str) -> None:
    """Refuse a ``str.format`` or ``%`` format whose widths or precisions exceed the value budget."""
    budget = active()
    specs: list[str] = []
    try:
        specs = [spec for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None and spec]
    except ValueError:
        pass  # not a valid format string: str.format will say so itself
    specs += [m.group(0) for m in _FORMAT_PERCENT.finditer(fmt)]
    for spec in specs:
        for digits in _DIGITS.findall(spec):
            if len(digits) > 9 or int(digits) > budget.max_value_chars:
                raise BudgetExceeded(f"template formats to a width larger than {budget.max_value_chars}")


def foresee_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse a binary operation whose result would be too large, before computing it."""
    budget = active()
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if sized(seq) and isinstance(n, int):
                budget.size(sized(seq) * max(n, 0), "a repeated value")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        if left.bit_length() * right > _POW_MAX_BITS:
            raise BudgetExceeded(f"template computes a power larger than {_POW_MAX_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        check_format(left)
        if "*" in left:  # a width or precision taken from the arguments
            check_int_args(right if isinstance(right, tuple) else (right,))
    elif operator == "+" and sized(left) and sized(right):
        budget.size(sized(left) + sized(right))


def foresee_join(items: Any, separator: str) -> list[Any]:
    """The items of a join, materialized, once the joined length is known to fit."""
    budget = active()
    values = list(items)
    budget.step(len(values))
    total = max(len(values) - 1, 0) * len(separator)
    for value in values:
        total += len(value) if isinstance(value, str) else 16
    budget.size(total, "a joined value")
    return values


def foresee_replace(text: str, old: str, new: str, count: int = -1) -> None:
    hits = len(text) + 1 if old == "" else text.count(old)
    if count >= 0:
        hits = min(hits, count)
    active().size(len(text) + hits * max(len(new) - len(old), 0), "a replaced value")


def foresee_expandtabs(text: str, tabsize: int = 8) -> None:
    active().size(len(text) + text.count("\t") * max(tabsize, 0), "an expanded value")


# --- called from the rewritten template (see sandbox._rewrite) ------------------------------------

def charge(static_chars: int) -> str:
    """One pass through a loop or macro body (a step, counted by the call): the static text it prints."""
    active().produce(static_chars)
    return ""


def emit(value: Any) -> Any:
    """A printed expression: charged by its length (the finalize step caps campaign values further)."""
    budget = active()
    budget.produce(len(value) if isinstance(value, str) else 16)
    return value


def concat(*values: Any) -> str:
    """``a ~ b``: the joined length is checked before the string is built."""
    parts = [v if isinstance(v, str) else str(v) for v in values]
    active().size(sum(len(p) for p in parts), "a concatenated value")
    return "".join(parts)


def counted(iterable: Any) -> Iterator[Any]:
    budget = active()
    for value in iterable:
        budget.step()
        yield value
