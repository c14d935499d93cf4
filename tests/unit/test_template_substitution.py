"""Substitution-only templates render without Jinja, to exactly the text Jinja's sandbox renders."""

from __future__ import annotations

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from factory.errors import InvalidInput
from factory.templates import budget
from factory.templates.sandbox import as_data, compile_template

RECORDS = [
    {"first_name": "Ana", "city": "Lisbon", "n": 3, "vip": True, "score": 2.5, "none": None},
    {"first_name": "Chloé «x»\nZoë", "city": "  Ōsaka\t", "n": -0, "vip": False, "score": 1e21, "none": None},
    {"first_name": ["a", 1], "city": {"k": "v"}, "n": 10 ** 30, "vip": None, "score": float("inf"), "none": ""},
    {"first_name": "", "city": "\u2028line", "n": 0.1, "vip": 0, "score": -2.0, "none": "{{ n }}"},
]
SUBSTITUTIONS = [
    "Hi {{ first_name }} from {{ city }}!",
    "{{first_name}}{{city}}{{n}}{{vip}}{{score}}{{none}}",
    "Plain text, no fields at all.\n",
    "  leading and trailing whitespace\n\n",
    "{{ n }}\n{{ vip }}\n",
    "{{ first_name }} {{ first_name }} {{ first_name }}",
    "% literal {{ '{{' }} braces",  # a Const, not a Name: renders through Jinja
    "{{ range }}",  # a global, not a field: renders through Jinja
]


@pytest.mark.parametrize("source", SUBSTITUTIONS)
@pytest.mark.parametrize("delimited", [False, True], ids=["plain", "as_data"])
def test_a_substitution_renders_what_the_stock_sandbox_renders(source: str, delimited: bool) -> None:
    options = {"finalize": as_data} if delimited else {}
    stock = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, **options)
    template = compile_template(source)
    for record in RECORDS:
        expected = stock.from_string(source).render(record)
        assert template.render(record, as_data=delimited) == expected


def test_only_literal_text_and_plain_fields_take_the_substitution_path() -> None:
    assert compile_template("Hi {{ first_name }}!").substitution == ((False, "Hi "), (True, "first_name"),
                                                                     (False, "!"))
    for source in ("{{ first_name|upper }}", "{{ a.b }}", "{% if vip %}x{% endif %}", "{{ 'x' }}",
                   "{% for i in range(2) %}{{ i }}{% endfor %}", "{{ a ~ b }}"):
        assert compile_template(source).substitution is None, source


def test_a_missing_field_is_named_as_jinja_names_it() -> None:
    with pytest.raises(InvalidInput, match="missing value: 'city' is undefined"):
        compile_template("Hi {{ first_name }} from {{ city }}").render({"first_name": "Ana"})


def test_a_substitution_is_held_to_the_prompt_and_output_budgets() -> None:
    template = compile_template("{{ a }}{{ a }}{{ a }}{{ a }}{{ a }}")
    with budget.bound(budget.RenderBudget(max_output_chars=100)):
        with pytest.raises(InvalidInput, match="more than 400 characters for one record"):
            template.render({"a": "x" * 90})
        with pytest.raises(InvalidInput, match="the rendered prompt is 125 bytes"):
            template.render({"a": "é" * 12 + "x"})
        assert template.render({"a": "x" * 20}) == "x" * 100
