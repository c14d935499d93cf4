"""Where a canary value is still stored: database rows and objects, read back after an erasure or a purge."""

from __future__ import annotations

import json

from sqlalchemy import select

from factory.config import Settings
from factory.db.models import AugmentationSourceRow, Batch, Item, Job, StoredFile
from factory.db.session import get_sessionmaker
from factory.storage import open_store

# Every table an upload's values may be copied into.
COPY_TABLES: tuple[type, ...] = (Item, AugmentationSourceRow, Job, Batch, StoredFile)


def rows_with(settings: Settings, canary: str) -> list[str]:
    """``table.column`` of every stored value that contains ``canary``."""
    found = []
    with get_sessionmaker(settings.database_url)() as s:
        for model in COPY_TABLES:
            columns = model.__table__.columns  # type: ignore[attr-defined]
            for row in s.scalars(select(model)):
                for column in columns:
                    if canary in json.dumps(getattr(row, column.key), default=str):
                        found.append(f"{model.__tablename__}.{column.key}")  # type: ignore[attr-defined]
    return found


def objects_with(settings: Settings, canary: str) -> list[str]:
    """Keys of the stored objects whose content contains ``canary``."""
    store = open_store(settings)
    return [key for key in store.list_keys("tenants/") if canary.encode() in store.get_bytes(key)]
