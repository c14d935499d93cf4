"""Recording a benchmark's table in bench/README.md, between its ``<!-- name:start -->`` and
``<!-- name:end -->`` markers (the section's prose around them stays as written)."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).with_name("README.md")


def write_section(name: str, table: str, meta: str) -> None:
    """Replace what is between the markers of ``name`` with the table and its conditions line."""
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = README.read_text()
    start, end = text.index(start_mark) + len(start_mark), text.index(end_mark)
    README.write_text(text[:start] + "\n" + table + "\n\n" + meta + "\n" + text[end:])
