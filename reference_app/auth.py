"""Bearer-token auth for /api/: every route runs as the business whose API token it presents."""
from __future__ import annotations

import hmac
from functools import wraps

from flask import g, jsonify, request
from sqlalchemy import select

from reference_app.models import Business


def require_business(view):
    """Resolve `Authorization: Bearer <token>` to `g.business`; 401 when missing or unknown."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return jsonify(error="unauthorized", message="Authorization: Bearer <token> required"), 401
        business = g.db.scalar(select(Business).where(Business.api_token == token.strip()))
        if business is None or not hmac.compare_digest(business.api_token, token.strip()):
            return jsonify(error="unauthorized", message="unknown token"), 401
        g.business = business
        return view(*args, **kwargs)

    return wrapper
