"""/api/ lead routes: bulk delete, job progress and resume, remaining leads (issue 3).

Thin: parse, call one function in leads.py, map its Answer to JSON and a status."""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from loopfix.reference_app.auth import require_business
from loopfix.reference_app.leads import Answer, job_progress, list_leads, request_bulk_delete, resume_job

bp = Blueprint("leads", __name__, url_prefix="/api")


def _svc():
    return current_app.extensions["loopfix"]


def respond(answer: Answer):
    resp = jsonify(answer.body)
    resp.status_code = answer.status
    return resp


@bp.post("/leads/bulk-delete")
@require_business
def bulk_delete():
    return respond(request_bulk_delete(_svc(), g.db, g.business, request.get_json(silent=True)))


@bp.get("/jobs/<int:job_id>")
@require_business
def job(job_id: int):
    return respond(job_progress(_svc(), g.db, g.business, job_id))


@bp.post("/jobs/<int:job_id>/resume")
@require_business
def resume_route(job_id: int):
    return respond(resume_job(_svc(), g.db, g.business, job_id))


@bp.get("/leads")
@require_business
def leads():
    return respond(list_leads(g.db, g.business, request.args))
