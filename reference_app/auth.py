"""Bearer-token auth for /api/: every route runs as the business whose API token it presents."""
from __future__ import annotations

import hmac
from functools import wraps
from typing import NamedTuple

from flask import g, jsonify, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from loopfix.reference_app.compiled_select import CompiledSelect
from loopfix.reference_app.db import RequestDb
from loopfix.reference_app.models import Business

# Every /api/ request runs this: one indexed SELECT of two columns, no ORM object (the ORM select
# was 12 % of a 202 poll's time in the profile). No cache: a changed or revoked token stops
# working on the next request.
BY_TOKEN = select(Business.id, Business.api_token).where(Business.api_token == bindparam("token"))


class BusinessRow(NamedTuple):
    id: int
    api_token: str


_BY_TOKEN = CompiledSelect(BY_TOKEN)


def business_for_token(db: Session | RequestDb, token: str) -> BusinessRow | None:
    row = _BY_TOKEN.first(db, token=token)
    return None if row is None else BusinessRow(*row)


def require_business(view=None, *, lookup=None):
    """Resolve `Authorization: Bearer <token>` to `g.business` (a row with the business's `id`
    and `api_token`); 401 when missing or unknown.

    `lookup(db, token, **view_kwargs)`, for a route that reads its object in the same SELECT
    (`@require_business(lookup=...)`): a row whose first two items are the business's id and
    token (None: unknown token) and whose third is given to the view as `found`."""
    if view is None:
        return lambda view: require_business(view, lookup=lookup)

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not token or scheme.lower() != "bearer":
            return jsonify(error="unauthorized", message="Authorization: Bearer <token> required"), 401
        gg = g._get_current_object()  # one context lookup, not one per attribute
        row = business_for_token(gg.request_db, token) if lookup is None else lookup(gg.request_db, token, **kwargs)
        if row is None or not hmac.compare_digest(row[1], token):
            return jsonify(error="unauthorized", message="unknown token"), 401
        if lookup is None:
            gg.business = row
        else:
            gg.business, kwargs["found"] = BusinessRow(row[0], row[1]), row[2]
        return view(*args, **kwargs)

    return wrapper
