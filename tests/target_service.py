"""A small recording + lead service written apart from reference_app, with bugs planted on demand.

Target mode judges a service loopfix did not write from outside only; to show that each outside
check can fail, its tests point loopfix at this service with one `--bug` at a time. It speaks the
target-mode routes of reference_app/openapi.yaml with the fixed policy by default, in one process:
Flask on werkzeug's threaded server, in-memory state under one lock, download worker threads on an
in-memory queue, a scheduler thread that re-queues retries when due; no RQ, no Redis, nothing
imported from reference_app. Durations are policy seconds times --time-scale.

    python tests/target_service.py --port 8000 --fixtures fixtures.json --media-host 127.0.0.1:9100 \\
        --time-scale 0.01 [--workers 2] [--bug NAME ...]

Fixtures are what `loopfix seed --json` prints (businesses: id, api_token, account_sid, auth_token,
calls [{call_sid}] completed without a recording yet, lead_ids). The hooks POST /_admin/workers/stop
and /start (loopback only): stopped workers take no job (a fetch under way ends), delete jobs wait.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from flask import Flask, Response, abort, jsonify, make_response, request
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

BUGS = {
    "no_backoff": "a failed fetch is retried at once instead of after the backoff",
    "retries_forever": "no retry limit: the backoff schedule (capped at 1200 s) goes on forever",
    "downloads_twice": "every successful download is fetched a second time",
    "no_retry_after": "202 answers carry no Retry-After header",
    "no_fail_fast": "never 500 worker_not_processing_queue: 202 forever while workers are stopped",
    "loses_recording": "a fetch error loses the recording for good: no retry, every later play is 404",
    "new_delete_job_per_click": "every bulk-delete request creates a new job, even while one is active",
}

# The fixed policy (reference_app/policy.py's Policy defaults), in policy seconds.
BACKOFF_BASE_S, BACKOFF_CAP_S, MAX_RETRIES = 60.0, 1200.0, 5
RETRY_AFTER_S, PLAYBACK_MARK_S = 3.0, 15.0
FAIL_FAST_MAX_ATTEMPTS, FAIL_FAST_WINDOW_S = 3, 600.0
BATCH_SIZE, BATCH_PAUSE_S = 50, 0.2
READ_TIMEOUT_S, CONNECT_TIMEOUT_WALL_S, MIN_READ_TIMEOUT_WALL_S = 30.0, 5.0, 2.0
SCHEDULER_TICK_WALL_S, LEAD_ID_MAX = 0.005, 2**31 - 1
DOWNLOAD_ACTIVE = ("queued", "running", "retry_wait")
DELETE_ACTIVE = ("queued", "running", "paused")


def backoff_s(failures: int) -> float:
    """Policy seconds before the retry that follows failure number `failures` (1-based)."""
    return min(BACKOFF_BASE_S * 2 ** min(failures - 1, 32), BACKOFF_CAP_S)


def audio_url(url: str) -> str:
    """Twilio's RecordingUrl → the URL to fetch: a `.json` path suffix becomes `.mp3`."""
    parts = urlsplit(url)
    path = parts.path[: -len(".json")] + ".mp3" if parts.path.endswith(".json") else parts.path
    return urlunsplit(parts._replace(path=path))


@dataclass
class Business:
    id: object
    api_token: str
    account_sid: str
    auth_token: str
    leads: dict[int, dict] = field(default_factory=dict)
    active_delete: DeleteJob | None = None


@dataclass
class Call:
    sid: str
    business: Business
    status: str = "completed"
    url: str | None = None  # the audio URL of its recording
    audio: bytes | None = None
    content_type: str = ""
    lost: bool = False  # (loses_recording) a fetch failed: gone for good
    job: str | None = None  # its download job: None | queued | running | retry_wait | done | failed
    failures: int = 0  # the job's failed fetches
    due: float = 0.0  # monotonic time a retry_wait job is queued again
    mark_until: float = 0.0  # monotonic end of the playback mark
    attempts: int = 0  # fail-fast attempts in the window that opened at attempts_since
    attempts_since: float | None = None


@dataclass
class DeleteJob:
    id: int
    business: Business
    ids: list[int]
    status: str = "queued"
    processed: int = 0
    succeeded: int = 0
    skipped: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat: float | None = None  # monotonic

    def as_json(self, scale: float) -> dict:
        total, beat = len(self.ids), self.heartbeat
        return {"job_id": self.id, "job_type": "delete_leads_bulk", "status": self.status, "total": total,
                "processed": self.processed, "succeeded": self.succeeded, "skipped": self.skipped,
                "failed_batches": 0, "progress": self.processed / total, "lock_held": self.status in DELETE_ACTIVE,
                "heartbeat_age_s": None if beat is None else (time.monotonic() - beat) / scale, "last_error": None,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at}


class Service:
    """All state (under `cv`), the download workers, the retry scheduler and the delete jobs.
    Callers of enqueue, take_mark and count_attempt hold cv. ValueError (one line) when the
    fixtures are not the shape `loopfix seed --json` prints."""

    def __init__(self, fixtures: dict, media_host: tuple[str, int], time_scale: float, workers: int,
                 bugs: set[str]):
        self.media_host, self.scale, self.n_workers, self.bugs = media_host, time_scale, workers, bugs
        self.cv = threading.Condition(threading.RLock())
        self.by_token, self.by_account = {}, {}  # Business by api_token, by AccountSid
        self.calls: dict[str, Call] = {}
        self.recording_sids: set[str] = set()  # every RecordingSid ever accepted: one job each
        self.delete_jobs, self.job_ids = {}, itertools.count(1)
        self.ready: deque[Call] = deque()  # calls whose job a worker may take
        self.delayed: list[Call] = []  # calls whose job waits for its retry
        self.workers_on, self.closing = True, False
        for i, b in enumerate(fixtures.get("businesses") or [] if isinstance(fixtures, dict) else []):
            try:
                biz = Business(b["id"], b["api_token"], b["account_sid"], b["auth_token"])
                biz.leads = {n: {"id": n, "name": f"lead {n}", "phone": f"+1555{n % 10**7:07d}"}
                             for n in map(int, b.get("lead_ids") or ())}
                calls = [Call(c["call_sid"], biz) for c in b.get("calls") or ()]
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"business {i}: {exc!r}; expected id, api_token, account_sid, auth_token") from None
            self.by_token[biz.api_token], self.by_account[biz.account_sid] = biz, biz
            self.calls.update((c.sid, c) for c in calls)
        if not self.by_token:
            raise ValueError('expected {"businesses": [...]} with at least one business')

    def wall(self, policy_s: float) -> float:
        return policy_s * self.scale

    def start(self) -> None:
        for i in range(self.n_workers):
            threading.Thread(target=self._worker, name=f"worker-{i + 1}", daemon=True).start()
        threading.Thread(target=self._scheduler, name="scheduler", daemon=True).start()

    def switch(self, **flags: bool) -> None:  # workers_on (the admin hooks) or closing; wakes all
        with self.cv:
            self.__dict__.update(flags)
            self.cv.notify_all()

    def enqueue(self, call: Call) -> None:
        call.job, call.failures = "queued", 0
        self.ready.append(call)
        self.cv.notify_all()

    def take_mark(self, call: Call, now: float) -> bool:
        """The 15 s playback mark: only the poll that takes it may enqueue or count an attempt."""
        if now < call.mark_until:
            return False
        call.mark_until = now + self.wall(PLAYBACK_MARK_S)
        return True

    def count_attempt(self, call: Call, now: float) -> bool:
        """Count one fail-fast attempt; True when this one trips it (the count exceeds the max)."""
        if call.attempts_since is None or now - call.attempts_since >= self.wall(FAIL_FAST_WINDOW_S):
            call.attempts_since, call.attempts = now, 0
        call.attempts += 1
        return call.attempts > FAIL_FAST_MAX_ATTEMPTS and "no_fail_fast" not in self.bugs

    def _worker(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.closing or (self.workers_on and self.ready))  # every change notifies
                if self.closing:
                    return
                call = self.ready.popleft()
                call.job = "running"
            self._run(call, call.url)

    def _scheduler(self) -> None:
        while not self.closing:
            time.sleep(SCHEDULER_TICK_WALL_S)
            now = time.monotonic()
            with self.cv:
                for call in [c for c in self.delayed if c.due <= now]:
                    self.delayed.remove(call)
                    call.job = "queued"
                    self.ready.append(call)
                    self.cv.notify_all()

    def _run(self, call: Call, url: str) -> None:
        try:
            body, content_type = self.fetch(url)
        except OSError:  # requests' errors are OSErrors too
            with self.cv:
                self._failed(call)
            return
        with self.cv:
            call.job, call.audio, call.content_type = "done", body, content_type
        if "downloads_twice" in self.bugs:
            with contextlib.suppress(OSError):
                self.fetch(url)

    def _failed(self, call: Call) -> None:
        call.failures += 1
        if "loses_recording" in self.bugs:
            call.lost, call.job = True, "failed"
        elif call.failures > MAX_RETRIES and "retries_forever" not in self.bugs:
            call.job = "failed"  # a later play enqueues a new job
        else:
            delay = 0.0 if "no_backoff" in self.bugs else backoff_s(call.failures)
            call.job, call.due = "retry_wait", time.monotonic() + self.wall(delay)
            self.delayed.append(call)

    def fetch(self, url: str) -> tuple[bytes, str]:
        """The whole body of a 200 and its Content-Type; OSError otherwise (requests' included)."""
        read_timeout = max(MIN_READ_TIMEOUT_WALL_S, self.wall(READ_TIMEOUT_S))
        resp = requests.get(url, timeout=(CONNECT_TIMEOUT_WALL_S, read_timeout), allow_redirects=False)
        body, length = resp.content, resp.headers.get("Content-Length", "")
        if resp.status_code != 200:
            raise OSError(f"HTTP {resp.status_code}")
        if not body or (length.isdigit() and len(body) != int(length)):
            raise OSError(f"short body: {len(body)} of {length} bytes")
        return body, resp.headers.get("Content-Type", "application/octet-stream")

    def media_host_allowed(self, url: str) -> bool:
        """http on exactly the media host and port; no user-info, no space, control or non-ASCII."""
        try:
            parts = urlsplit(url)
            where = (parts.hostname, parts.port or 80)
        except ValueError:
            return False
        return (all("\x21" <= c <= "\x7e" for c in url) and parts.scheme == "http" and "@" not in parts.netloc
                and where == self.media_host)

    def bulk_delete(self, business: Business, ids: list[int]) -> dict:
        """The answer: the business's active job (existing), or a new one, started."""
        with self.cv:
            job = business.active_delete
            if job is not None and job.status in DELETE_ACTIVE and "new_delete_job_per_click" not in self.bugs:
                return {"job_id": job.id, "existing": True, "status": job.status}
            job = DeleteJob(next(self.job_ids), business, ids)
            self.delete_jobs[job.id] = business.active_delete = job
        threading.Thread(target=self._delete, args=(job,), name=f"delete-{job.id}", daemon=True).start()
        return {"job_id": job.id, "existing": False, "status": "queued"}

    def _delete(self, job: DeleteJob) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.workers_on or self.closing)
            job.status, job.started_at, job.heartbeat = "running", time.time(), time.monotonic()
        for start in range(0, len(job.ids), BATCH_SIZE):
            if start:
                time.sleep(self.wall(BATCH_PAUSE_S))
            with self.cv:
                for lead_id in job.ids[start : start + BATCH_SIZE]:
                    if job.business.leads.pop(lead_id, None) is None:
                        job.skipped += 1  # deleted already, or another tenant's: never touched
                    else:
                        job.succeeded += 1
                job.processed, job.heartbeat = min(start + BATCH_SIZE, len(job.ids)), time.monotonic()
        with self.cv:
            job.status, job.finished_at = "completed", time.time()


def make_app(svc: Service) -> Flask:
    app = Flask("target_service")

    def error(status: int, code: str, message: str):
        return make_response(jsonify(error=code, message=message), status)

    def processing():
        resp = make_response(jsonify(status="processing"), 202)
        if "no_retry_after" not in svc.bugs:  # whole wall seconds, as HTTP means it, never 0
            resp.headers["Retry-After"] = str(max(1, math.ceil(svc.wall(RETRY_AFTER_S))))
        return resp

    def bearer() -> Business | None:
        auth = request.headers.get("Authorization", "")
        return svc.by_token.get(auth[len("Bearer "):].strip()) if auth.startswith("Bearer ") else None

    def signed() -> tuple[Business, dict]:
        """The webhook's business and form, when X-Twilio-Signature is its auth token's; else 403."""
        form = request.form.to_dict()
        business = svc.by_account.get(form.get("AccountSid", ""))
        signature = request.headers.get("X-Twilio-Signature", "")
        if business is None or not signature or not RequestValidator(business.auth_token).validate(
                request.url, form, signature):
            abort(error(403, "bad_signature", "unknown AccountSid or bad X-Twilio-Signature"))
        return business, form

    def webhook_call(business: Business, call_sid: str) -> Call:
        """The business's call, created when unknown; 409 when another business owns it."""
        call = svc.calls.setdefault(call_sid, Call(call_sid, business))
        if call.business is not business:
            abort(error(409, "call_conflict", "the CallSid belongs to another account"))
        return call

    def own(table: dict, key):
        """The bearer's own call or job; 404 for another business's exactly as for an unknown one."""
        found = table.get(key)
        if found is None or found.business is not bearer():
            abort(error(404, "not_found", f"no such {'call' if table is svc.calls else 'job'}"))
        return found

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_routed(exc):
        return error(exc.code, "not_found" if exc.code == 404 else "method_not_allowed", exc.description)

    @app.before_request
    def authenticate():
        if request.path.startswith("/api/") and bearer() is None:
            return error(401, "unauthorized", "Authorization: Bearer <api_token> required")
        return None  # /_admin/ needs no token: the server listens on loopback only

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True, variant="fixed", time_scale=svc.scale, bugs=sorted(svc.bugs))

    @app.post("/webhooks/twilio/call-status")
    def call_status():
        business, form = signed()
        if not form.get("CallSid"):
            return error(400, "missing_field", "CallSid is required")
        with svc.cv:
            call = webhook_call(business, form["CallSid"])
            call.status = form.get("CallStatus") or call.status
        return "", 204

    @app.post("/webhooks/twilio/recording")
    def recording():
        business, form = signed()
        missing = [k for k in ("CallSid", "RecordingSid", "RecordingUrl") if not form.get(k)]
        if missing:
            return error(400, "missing_field", f"required: {', '.join(missing)}")
        if not svc.media_host_allowed(form["RecordingUrl"]):
            return error(400, "host_not_allowed", "RecordingUrl is not on the allowed media host")
        if form.get("RecordingStatus", "completed") != "completed":
            return "", 204
        with svc.cv:
            call = webhook_call(business, form["CallSid"])
            if form["RecordingSid"] not in svc.recording_sids:  # a replay, or Twilio's retry, does nothing
                svc.recording_sids.add(form["RecordingSid"])
                call.url, call.audio, call.lost = audio_url(form["RecordingUrl"]), None, False
                if call.job not in DOWNLOAD_ACTIVE:  # an active job fetches the new URL when it runs
                    svc.enqueue(call)
        return "", 204

    @app.get("/api/recordings/file/<call_sid>")
    def play(call_sid: str):
        now = time.monotonic()
        with svc.cv:
            call = own(svc.calls, call_sid)
            if call.audio is not None:
                return Response(call.audio, 200, content_type=call.content_type)
            if call.url is None or call.lost:
                return error(404, "no_recording", "the call has no recording")
            if call.job in DOWNLOAD_ACTIVE:
                # fail-fast counts only a marked poll of a queued job no worker will take
                counts = not svc.workers_on and call.job == "queued" and svc.take_mark(call, now)
                enqueue = False
            else:  # no job, or the last one failed: the poll that takes the mark starts one
                enqueue = svc.take_mark(call, now)
                counts = enqueue and not svc.workers_on
            if counts and svc.count_attempt(call, now):
                return error(500, "worker_not_processing_queue", "no worker is taking the queue")
            if enqueue:
                svc.enqueue(call)
        return processing()

    @app.post("/api/calls/<call_sid>/recording/enqueue")
    def enqueue(call_sid: str):
        with svc.cv:
            call = own(svc.calls, call_sid)
            if call.url is None or call.lost:
                return error(404, "no_recording", "the call has no recording")
            if call.audio is not None or call.job in DOWNLOAD_ACTIVE:
                return jsonify(success=True, reason="cached" if call.audio is not None else "duplicate")
            svc.enqueue(call)
        return jsonify(success=True, reason="enqueued"), 202

    @app.post("/api/leads/bulk-delete")
    def bulk_delete():
        body = request.get_json(silent=True)
        ids = body.get("lead_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or any(
                isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= LEAD_ID_MAX for x in ids):
            return error(400, "bad_lead_ids", f"lead_ids must be a non-empty list of integers 1..{LEAD_ID_MAX}")
        return jsonify(svc.bulk_delete(bearer(), list(dict.fromkeys(ids)))), 202

    @app.get("/api/jobs/<int:job_id>")
    def job_status(job_id: int):
        with svc.cv:
            return jsonify(own(svc.delete_jobs, job_id).as_json(svc.scale))

    @app.post("/api/jobs/<int:job_id>/resume")
    def resume(job_id: int):
        with svc.cv:  # jobs here never pause: nothing to resume
            job = own(svc.delete_jobs, job_id)
            return jsonify(job_id=job.id, resumed=False, status=job.status, reason=f"job is {job.status}")

    @app.get("/api/leads")
    def leads():
        try:
            after, limit = int(request.args.get("after", 0)), int(request.args.get("limit", 1000))
        except ValueError:
            return error(400, "bad_page", "after and limit must be integers")
        if after < 0 or not 1 <= limit <= 1000:
            return error(400, "bad_page", "after must be >= 0 and limit from 1 to 1000")
        with svc.cv:
            lead_map = bearer().leads
            ids = sorted(i for i in lead_map if i > after)
            page, total = [dict(lead_map[i]) for i in ids[:limit]], len(lead_map)
        return jsonify(leads=page, next_after=page[-1]["id"] if len(ids) > limit else None, total=total)

    @app.post("/_admin/workers/<action>")
    def workers(action: str):
        if action not in ("stop", "start"):
            return error(404, "not_found", "POST /_admin/workers/stop or /_admin/workers/start")
        svc.switch(workers_on=action == "start")
        return jsonify(workers="started" if action == "start" else "stopped")

    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with `media` (host, port) and `service` (a Service, not started) added."""
    parser = argparse.ArgumentParser(prog="target_service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--fixtures", required=True, help="fixtures JSON (the shape `loopfix seed --json` prints)")
    parser.add_argument("--media-host", default="127.0.0.1:9100", help="HOST:PORT recordings may be fetched from")
    parser.add_argument("--time-scale", type=float, default=1.0, help="wall seconds per policy second")
    parser.add_argument("--workers", type=int, default=2, help="download worker threads")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(BUGS), metavar="NAME",
                        help="plant a bug (repeatable): " + ", ".join(sorted(BUGS)))
    args = parser.parse_args(argv)
    if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        parser.error(f"--time-scale {args.time_scale:g}: must be a positive number")
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be at least 1")
    host, _, port = args.media_host.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"--media-host {args.media_host!r}: expected HOST:PORT, e.g. 127.0.0.1:9100")
    args.media = (host.strip("[]").lower(), int(port))
    try:
        fixtures = json.loads(Path(args.fixtures).read_text(encoding="utf-8"))
        args.service = Service(fixtures, args.media, args.time_scale, args.workers, set(args.bug))
    except OSError as exc:
        parser.error(f"--fixtures: cannot read {args.fixtures}: {exc.strerror}")
    except ValueError as exc:  # not JSON, or not the shape
        parser.error(f"--fixtures {args.fixtures}: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    try:  # bound here, not by werkzeug, so a taken port is one line, not werkzeug's advice
        listener = socket.create_server(("127.0.0.1", args.port))
    except (OSError, OverflowError) as exc:
        print(f"target_service: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    svc = args.service
    server = make_server("127.0.0.1", args.port, make_app(svc), threaded=True, fd=listener.fileno())
    listener.close()  # the server holds its own duplicate of the socket

    def on_sigterm(*_) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM (the process group's) must not cut the exit
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    svc.start()
    print(f"target_service listening on http://127.0.0.1:{server.port} (time_scale {args.time_scale:g}, "
          f"workers {args.workers}, bugs: {', '.join(sorted(svc.bugs)) or 'none'})", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        svc.switch(closing=True)
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
