"""/api/ lead routes: bulk delete, job progress and resume, remaining leads (issue 3)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("leads", __name__, url_prefix="/api")
