"""Core SELECTs on the request's hot path, compiled once per dialect and run with the DBAPI
cursor of the session's connection (same connection, same transaction).

On the playback poll SQLAlchemy's execution context and result objects cost ten times SQLite's
own lookup (34 µs against 3.5 µs per query, best of 5 × 2,000 on SQLite); the statement is still
SQLAlchemy's, rendered in each dialect's paramstyle. Only for statements whose columns need no
result processing (integers, floats, strings): rows come back as the driver's tuples.
"""
from __future__ import annotations

from sqlalchemy.orm import Session


class CompiledSelect:
    """A Core SELECT run as the module docstring says; `first(session, **params)` is its first
    row (a tuple) or None. A bind parameter may appear more than once."""

    def __init__(self, stmt) -> None:
        self.stmt = stmt
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _sql(self, dialect) -> tuple[str, tuple[str, ...] | None]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.stmt.compile(dialect=dialect)
            found = (str(compiled), tuple(compiled.positiontup) if compiled.positional else None)
            self._compiled[dialect.name] = found
        return found

    def first(self, session: Session, **params) -> tuple | None:
        conn = session.connection()
        sql, order = self._sql(conn.dialect)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, tuple(params[name] for name in order) if order is not None else params)
            return cursor.fetchone()
        finally:
            cursor.close()
