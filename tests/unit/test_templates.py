import pytest

from factory.errors import InvalidInput
from factory.templates.sandbox import compile_template


def test_variables_are_listed_and_rendered() -> None:
    t = compile_template("Hi {{ first_name }} from {{ city | upper }}{% if vip %}!{% endif %}")
    assert t.variables == {"first_name", "city", "vip"}
    assert t.render({"first_name": "Ana", "city": "Lisbon", "vip": True}) == "Hi Ana from LISBON!"
    assert len(t.sha256) == 64


def test_syntax_error_names_line_and_field() -> None:
    with pytest.raises(InvalidInput) as exc:
        compile_template("ok\n{{ name ")
    assert exc.value.field == "template"
    assert "line 2" in exc.value.message


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ name.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
])
def test_sandbox_blocks_escapes(source: str) -> None:
    t = compile_template(source)
    with pytest.raises(InvalidInput) as exc:
        t.render({"name": "x"})
    assert exc.value.field in ("template", "audience")


def test_missing_value_is_an_error_not_empty_text() -> None:
    t = compile_template("Hi {{ person.first }}")
    with pytest.raises(InvalidInput):
        t.render({"person": {}})


def test_sandbox_is_immutable() -> None:
    t = compile_template("{% set _ = items.append(1) %}{{ items }}")
    with pytest.raises(InvalidInput):
        t.render({"items": []})
