"""/api/ recording routes: playback status + audio, stream/download with Range, enqueue.

Thin: parse, call one function in recordings.py, map its Answer to HTTP."""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from loopfix.reference_app.auth import require_business
from loopfix.reference_app.file_response import file_response, proxied_response
from loopfix.reference_app.policy import retry_after_header
from loopfix.reference_app.recordings import Answer, CallRecording, ReadyFile, enqueue_api, playback, token_and_call

bp = Blueprint("recordings", __name__, url_prefix="/api")


def _svc():
    return current_app.extensions["loopfix"]


def respond(svc, answer: Answer):
    if answer.file is not None:
        return send_recording(svc, answer.file)
    resp = jsonify(answer.body)
    resp.status_code = answer.status
    if answer.retry_after_s is not None:  # policy seconds; the header says wall seconds, as HTTP means
        resp.headers["Retry-After"] = retry_after_header(svc.policy.wall(answer.retry_after_s))
    return resp


def send_recording(svc, file: ReadyFile, download_name: str | None = None, as_attachment: bool = False):
    """The file's bytes (sendfile; 206 / 304 / 412 / 416 as the request's headers ask:
    file_response), or, with a proxy configured (LOOPFIX_SENDFILE), only the header that tells
    the proxy to send it."""
    name = download_name or file.path[file.path.rfind("/") + 1:]
    cfg = svc.config
    if cfg.sendfile_header:
        resp = proxied_response(file.path, file.content_type, name, as_attachment, cfg.sendfile_header,
                                cfg.recordings_dir, cfg.accel_prefix)
        if resp is not None:
            return resp
    try:
        return file_response(request.environ, file.path, file.content_type, file.sha256[:32], name, as_attachment)
    except FileNotFoundError:  # deleted since token_and_call saw it
        return jsonify(error="not_ready", message="recording file is gone; GET /api/recordings/file again"), 404


def _call(db, token: str, call_sid: str):
    """The recording routes' lookup (auth.require_business): the business and the call, one SELECT."""
    return token_and_call(db, token, call_sid, _svc().policy)


@bp.get("/recordings/file/<call_sid>")
@require_business(lookup=_call)
def recording_file(call_sid: str, found: CallRecording | None):
    gg, svc = g._get_current_object(), _svc()
    return respond(svc, playback(svc, gg.request_db, gg.business, call_sid, found))


def _serve_ready(call_sid: str, call: CallRecording | None, as_attachment: bool):
    if call is None:
        return jsonify(error="not_found"), 404
    file = call.file
    if file is None:
        return jsonify(error="not_ready", message="recording not downloaded yet; GET /api/recordings/file first"), 404
    return send_recording(_svc(), file, as_attachment=as_attachment,
                          download_name=f"{call_sid}{file.path[file.path.rfind('.'):]}")


@bp.get("/calls/<call_sid>/recording/stream")
@require_business(lookup=_call)
def stream(call_sid: str, found: CallRecording | None):
    return _serve_ready(call_sid, found, as_attachment=False)


@bp.get("/calls/<call_sid>/recording/download")
@require_business(lookup=_call)
def download(call_sid: str, found: CallRecording | None):
    return _serve_ready(call_sid, found, as_attachment=True)


@bp.post("/calls/<call_sid>/recording/enqueue")
@require_business(lookup=_call)
def enqueue(call_sid: str, found: CallRecording | None):
    svc = _svc()
    return respond(svc, enqueue_api(svc, g.request_db, g.business, call_sid, found))
