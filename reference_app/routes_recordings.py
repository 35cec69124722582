"""/api/ recording routes: playback status + audio, stream/download with Range, enqueue.

Thin: parse, call one function in recordings.py, map its Answer to HTTP."""
from __future__ import annotations

import os

from flask import Blueprint, current_app, g, jsonify, request, send_file

from loopfix.reference_app.auth import require_business
from loopfix.reference_app.byte_ranges import canonical_range
from loopfix.reference_app.policy import retry_after_header
from loopfix.reference_app.recordings import Answer, ReadyFile, enqueue_api, playback, read_call

bp = Blueprint("recordings", __name__, url_prefix="/api")


def _svc():
    return current_app.extensions["loopfix"]


def respond(answer: Answer):
    if answer.file is not None:
        return send_recording(answer.file)
    resp = jsonify(answer.body)
    resp.status_code = answer.status
    if answer.retry_after_s is not None:  # policy seconds; the header says wall seconds, as HTTP means
        resp.headers["Retry-After"] = retry_after_header(_svc().policy.wall(answer.retry_after_s))
    return resp


def send_recording(file: ReadyFile, **kwargs):
    """send_file with Range support, the Range header first made to mean what RFC 9110 says
    (byte_ranges.canonical_range: werkzeug alone answers 416 where the RFC wants 200 or 206)."""
    canonical = canonical_range(request.headers.get("Range"), os.path.getsize(file.path))
    if canonical is None:
        request.environ.pop("HTTP_RANGE", None)
    else:
        request.environ["HTTP_RANGE"] = canonical
    resp = send_file(file.path, mimetype=file.content_type, conditional=True, etag=file.sha256[:32], max_age=0,
                     **kwargs)
    resp.headers["Accept-Ranges"] = "bytes"
    return resp


@bp.get("/recordings/file/<call_sid>")
@require_business
def recording_file(call_sid: str):
    return respond(playback(_svc(), g.db, g.business, call_sid))


def _serve_ready(call_sid: str, as_attachment: bool):
    call = read_call(g.db, g.business, call_sid, _svc().policy)
    if call is None:
        return jsonify(error="not_found"), 404
    file = call.file
    if file is None:
        return jsonify(error="not_ready", message="recording not downloaded yet; GET /api/recordings/file first"), 404
    return send_recording(file, as_attachment=as_attachment,
                          download_name=f"{call_sid}{file.path[file.path.rfind('.'):]}")


@bp.get("/calls/<call_sid>/recording/stream")
@require_business
def stream(call_sid: str):
    return _serve_ready(call_sid, as_attachment=False)


@bp.get("/calls/<call_sid>/recording/download")
@require_business
def download(call_sid: str):
    return _serve_ready(call_sid, as_attachment=True)


@bp.post("/calls/<call_sid>/recording/enqueue")
@require_business
def enqueue(call_sid: str):
    return respond(enqueue_api(_svc(), g.db, g.business, call_sid))
