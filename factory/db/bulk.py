"""Bulk inserts for the rows a big batch writes by the thousand (items, chunks, outbox messages).

Rows come as tuples in the order of ``columns``, with values as the driver takes them
(JSON columns already serialised to text, enums as their values). PostgreSQL gets
them through COPY; SQLite through one DB-API ``executemany``. The ORM's and Core's
bulk inserts spent most of a 50,000-line batch's time on per-row bookkeeping
(bench/ingest.py). Where PostgreSQL's row-level security applies, rows are copied into a
staging table and inserted from there. Used by repositories only (they own the SQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, text
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
        if not _row_security_active(connection, table.name):
            _copy(connection, f"COPY {table.name} ({names}) FROM STDIN", rows)
            return
        # PostgreSQL refuses COPY FROM into a table whose row-level security applies to this role (migration
        # 0008; every role but a superuser or BYPASSRLS one): COPY into a private staging table, then one
        # INSERT ... SELECT, which checks every row against the table's policy like any INSERT.
        stage = f"bulk_stage_{table.name}"
        connection.exec_driver_sql(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
                                   f"SELECT {names} FROM {table.name} WITH NO DATA")
        _copy(connection, f"COPY {stage} ({names}) FROM STDIN", rows)
        connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage}")
        connection.exec_driver_sql(f"DROP TABLE {stage}")
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


def _copy(connection: Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    dbapi = connection.dialect.dbapi
    assert dbapi is not None
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as exc:  # as SQLAlchemy raises it (IntegrityError, OperationalError...), like any query
        raise DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=connection.dialect) from exc


def _row_security_active(connection: Connection, table_name: str) -> bool:
    """Asked once per pooled connection and table (the answer lives as long as the connection)."""
    known: dict[str, bool] = connection.connection.info.setdefault("row_security_active", {})
    if table_name not in known:
        known[table_name] = bool(connection.execute(text("SELECT row_security_active(:t)"), {"t": table_name})
                                 .scalar())
    return known[table_name]
