"""Bulk inserts for the rows a big batch writes by the thousand (items, chunks, outbox messages).

Rows come as tuples in the order of ``columns``, with values as the driver takes them
(JSON columns already serialised to text, enums as their values). PostgreSQL gets
them through COPY; SQLite through one DB-API ``executemany``. The ORM's and Core's
bulk inserts spent most of a 50,000-line batch's time on per-row bookkeeping
(bench/ingest.py). Used by repositories only (they own the SQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from factory.db.base import UTCDateTime


def insert_rows(session: Session, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    session.flush()  # ORM-pending rows first: these may reference them
    connection = session.connection()
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        statement = f"COPY {table.name} ({names}) FROM STDIN"
        dbapi = connection.dialect.dbapi
        assert dbapi is not None
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except dbapi.Error as exc:  # as SQLAlchemy raises it (IntegrityError, OperationalError...), like any query
            raise DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=connection.dialect) from exc
        return
    # SQLite keeps no time zone: timestamps go through their column's own processor.
    convert: list[tuple[int, Callable[[Any], Any]]] = []
    for index, name in enumerate(columns):
        column_type = table.c[name].type
        processor = column_type.bind_processor(connection.dialect) if isinstance(column_type, UTCDateTime) else None
        if processor is not None:
            convert.append((index, processor))
    prepared: Sequence[tuple[Any, ...]] = rows
    if convert:
        def fix(row: tuple[Any, ...]) -> tuple[Any, ...]:
            values = list(row)
            for index, processor in convert:
                if values[index] is not None:
                    values[index] = processor(values[index])
            return tuple(values)
        prepared = [fix(row) for row in rows]
    placeholders = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({placeholders})", prepared)
