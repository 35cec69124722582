"""Bearer-token auth for /api/: every route runs as the business whose API token it presents."""
from __future__ import annotations

import hmac
from functools import wraps
from typing import NamedTuple

from flask import g, jsonify, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from loopfix.reference_app.models import Business

# Every /api/ request runs this: one indexed SELECT of two columns, no ORM object (the ORM select
# was 12 % of a 202 poll's time in the profile). No cache: a changed or revoked token stops
# working on the next request.
BY_TOKEN = select(Business.id, Business.api_token).where(Business.api_token == bindparam("token"))


class BusinessRow(NamedTuple):
    id: int
    api_token: str


class CompiledSelect:
    """A Core SELECT compiled once per dialect and run with the DBAPI cursor of the session's
    connection (same connection, same transaction). On the playback poll SQLAlchemy's execution
    context and result objects cost ten times SQLite's own lookup (34 µs against 3.5 µs per
    query, best of 5 × 2,000); the statement is still SQLAlchemy's, in each dialect's paramstyle.
    For statements whose columns need no result processing (integers, strings)."""

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


_BY_TOKEN = CompiledSelect(BY_TOKEN)


def business_for_token(session: Session, token: str) -> BusinessRow | None:
    row = _BY_TOKEN.first(session, token=token)
    return None if row is None else BusinessRow(*row)


def require_business(view):
    """Resolve `Authorization: Bearer <token>` to `g.business` (a row with the business's `id`
    and `api_token`); 401 when missing or unknown."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return jsonify(error="unauthorized", message="Authorization: Bearer <token> required"), 401
        business = business_for_token(g.db, token.strip())
        if business is None or not hmac.compare_digest(business.api_token, token.strip()):
            return jsonify(error="unauthorized", message="unknown token"), 401
        g.business = business
        return view(*args, **kwargs)

    return wrapper
