"""The bounded sandbox renders what Jinja's sandbox renders, and counts per request."""

from __future__ import annotations

import time

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from factory.errors import InvalidInput
from factory.templates import budget
from factory.templates.sandbox import as_data, compile_template

RECORD = {"first_name": "ana", "city": "Lisbon «x»\nnext", "visits": 3, "vip": True, "score": 2.5}
TEMPLATES = [
    "Hi {{ first_name }} from {{ city }}!",
    "{% if vip %}VIP {% endif %}{{ first_name|title }} ({{ visits }} visits, score {{ score }})",
    "{% for i in range(visits) %}[{{ loop.index }}/{{ loop.length }}]{% else %}none{% endfor %}",
    "{% macro tag(x) %}<{{ x|upper }}>{% endmacro %}{{ tag(first_name) }}{{ tag(city) }}",
    "{% set greeting %}Dear {{ first_name }}{% endset %}{{ greeting }}, {{ greeting|length }}",
    "{{ '%s-%05.1f'|format(first_name, score) }} {{ '{}:{}'.format(first_name, visits) }} {{ '%d' % visits }}",
    "{{ first_name ~ '/' ~ visits }} {{ first_name + '!' }} {{ '=' * 10 }} {{ visits ** 3 }} {{ 7 // 2 }}",
    "{{ [first_name, city, 'x']|join(', ') }} {{ city|replace('i', 'I') }} {{ city.split()|first }}",
    "{{ city|center(30) }}|{{ first_name.ljust(8) }}|{{ city|indent(2, true) }}|{{ city|wordwrap(4) }}",
    "{% for a in 'ab' %}{% for b in [1, 2] if b > 1 %}{{ a }}{{ b }}{% endfor %}{% endfor %}",
    "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
    "{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}in {{ first_name }}{% endcall %}",
    "{{ range(3)|list }} {{ dict(a=1)|tojson }} {{ city|truncate(9) }} {{ [3, 1, 2]|sort|sum }}",
    "{{ 120000 }} {{ '%d' % 250000 }} {{ '{:,}'.format(1234567) }} {{ '%.2f'|format(99999.5) }} "
    "{{ [7]|sum(start=100000) }}",
]


@pytest.mark.parametrize("source", TEMPLATES)
@pytest.mark.parametrize("delimited", [False, True], ids=["plain", "as_data"])
def test_a_template_inside_the_budget_renders_as_the_stock_sandbox_does(source: str, delimited: bool) -> None:
    options = {"finalize": as_data} if delimited else {}
    stock = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, **options)
    expected = stock.from_string(source).render(RECORD)
    assert compile_template(source).render(RECORD, as_data=delimited) == expected


def test_the_counters_are_not_reachable_from_a_template() -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_template("{{ charge(-1000000) }}{{ counted }}").render({})
    assert "missing value" in caught.value.message


def test_each_request_has_its_own_budget() -> None:
    loop = compile_template("{% for i in range(50) %}{% endfor %}")
    small = budget.RenderBudget(max_steps=0, steps_per_record=110)
    with budget.bound(small):
        for _ in range(100):
            loop.render({})  # each record brings 110 steps and uses 103 (2 a pass)
        with budget.bound(budget.RenderBudget(max_steps=0, steps_per_record=10)), \
                pytest.raises(InvalidInput, match="more than 10 steps"):
            loop.render({})
        loop.render({})  # the inner request's overrun is not charged to this one
    assert budget.current() is None
    loop.render({})  # outside any request: a budget of its own


def test_a_request_past_its_time_budget_is_refused() -> None:
    late = budget.RenderBudget(deadline=time.monotonic() - 1)
    with budget.bound(late), pytest.raises(InvalidInput, match="time budget") as caught:
        compile_template("{% for i in range(3) %}{{ i }}{% endfor %}").render({}, field="audience[7]")
    assert caught.value.field == "audience[7]"


def test_the_prompt_cap_counts_utf8_bytes() -> None:
    template = compile_template("{{ text }}")
    with budget.bound(budget.RenderBudget(max_output_chars=300)):
        assert template.render({"text": "é" * 150}) == "é" * 150  # 300 bytes
        with pytest.raises(InvalidInput, match="302 bytes"):
            template.render({"text": "é" * 151})
