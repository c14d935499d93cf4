"""Reading rows back in tests."""

from __future__ import annotations

from sqlalchemy import func, select

from factory.db.session import get_sessionmaker


def count_rows(url: str, model: type) -> int:
    """How many rows the table of ``model`` holds in the database at ``url``."""
    with get_sessionmaker(url)() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)
