"""An engine the cache lets go of closes its pooled connections: none is left for the garbage collector."""

from __future__ import annotations

import gc
import warnings

from sqlalchemy import text

from factory.db.session import get_engine


def _collected_warnings(url: str, dispose_first: bool) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = get_engine.__wrapped__(url)  # the same engine get_engine builds, outside its cache
        for _ in range(2):
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        if dispose_first:
            engine.dispose()  # a fresh pool, which is used again before the engine goes
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        del engine
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_dropped_engine_closes_its_pool(pg_url: str) -> None:
    assert _collected_warnings(pg_url, dispose_first=False) == []


def test_dropped_engine_closes_the_pool_dispose_swapped_in(pg_url: str) -> None:
    assert _collected_warnings(pg_url, dispose_first=True) == []
