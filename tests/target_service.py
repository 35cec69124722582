"""A small recording + lead service written apart from reference_app, with bugs planted on demand.

Target mode judges a service loopfix did not write from outside only; to show that every outside
check can fail, its tests point loopfix at this service with one `--bug` at a time. It speaks the
routes of reference_app/openapi.yaml that target mode uses, with the fixed policy by default,
in one process: Flask on werkzeug's threaded server, in-memory state under one lock, download
worker threads fed by an in-memory queue, and a scheduler thread that re-queues retries when due.
No RQ, no Redis, and nothing imported from reference_app: it is a separate implementation.

    python tests/target_service.py --port 8000 --fixtures fixtures.json --media-host 127.0.0.1:9100 \
        --time-scale 0.01 [--workers 2] [--bug NAME ...]

Durations are policy seconds times --time-scale (0.01: the 60 s first backoff is 0.6 s wall).
Fixtures are the shape `loopfix seed --json` prints: businesses with id, name, api_token,
account_sid, auth_token, calls [{call_sid, recording_sid}] (completed, no recording yet) and
lead_ids. POST /_admin/workers/stop and /_admin/workers/start (loopback only) are the hooks:
stopped workers take no job (a fetch under way finishes), and delete jobs wait queued.
"""
from __future__ import annotations

import argparse
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
READ_TIMEOUT_S, CONNECT_TIMEOUT_WALL_S, MIN_READ_TIMEOUT_WALL_S = 30.0, 5.0, 0.5
SCHEDULER_TICK_WALL_S = 0.005
LEAD_ID_MAX = 2**31 - 1
DOWNLOAD_ACTIVE = ("queued", "running", "retry_wait")
DELETE_ACTIVE = ("queued", "running", "paused")


def backoff_s(failures: int) -> float:
    """Policy seconds before the retry that follows failure number `failures` (1-based)."""
    return min(BACKOFF_BASE_S * 2 ** min(failures - 1, 32), BACKOFF_CAP_S)


def audio_url(url: str) -> str:
    """Twilio's RecordingUrl → the URL to fetch: a `.json` path suffix becomes `.mp3`."""
    parts = urlsplit(url)
    if not parts.path.endswith(".json"):
        return url
    return urlunsplit(parts._replace(path=parts.path[: -len(".json")] + ".mp3"))


class FetchError(Exception):
    pass


@dataclass
class Business:
    id: object
    name: str
    api_token: str
    account_sid: str
    auth_token: str
    leads: dict[int, dict] = field(default_factory=dict)
    active_delete: "DeleteJob | None" = None


@dataclass
class Call:
    sid: str
    business: Business
    status: str = "completed"
    recording_sid: str | None = None
    url: str | None = None
    audio: bytes | None = None
    content_type: str = ""
    lost: bool = False
    job: "Download | None" = None
    mark_until: float = 0.0  # wall (monotonic) end of the playback mark
    attempts: int = 0  # fail-fast attempts in the window that started at attempts_since
    attempts_since: float | None = None


@dataclass
class Download:
    call: Call
    url: str
    state: str = "queued"  # queued | running | retry_wait | done | failed
    failures: int = 0
    due: float = 0.0


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
        total = len(self.ids)
        return {"job_id": self.id, "job_type": "delete_leads_bulk", "status": self.status, "total": total,
                "processed": self.processed, "succeeded": self.succeeded, "skipped": self.skipped,
                "failed_batches": 0, "progress": self.processed / total if total else 1.0,
                "lock_held": self.status in DELETE_ACTIVE,
                "heartbeat_age_s": None if self.heartbeat is None else (time.monotonic() - self.heartbeat) / scale,
                "last_error": None, "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at}


class Service:
    """All state, the download workers, the retry scheduler and the delete jobs."""

    def __init__(self, fixtures: dict, media_host: tuple[str, int], time_scale: float, workers: int,
                 bugs: set[str]):
        self.media_host, self.scale, self.n_workers, self.bugs = media_host, time_scale, workers, bugs
        self.cv = threading.Condition(threading.RLock())
        self.by_token: dict[str, Business] = {}
        self.by_account: dict[str, Business] = {}
        self.calls: dict[str, Call] = {}
        self.recording_sids: set[str] = set()
        self.delete_jobs: dict[int, DeleteJob] = {}
        self.job_ids = itertools.count(1)
        self.ready: deque[Download] = deque()
        self.delayed: list[Download] = []
        self.workers_on, self.closing = True, False
        for b in fixtures["businesses"]:
            biz = Business(b["id"], str(b.get("name", b["id"])), b["api_token"], b["account_sid"], b["auth_token"])
            biz.leads = {int(n): {"id": int(n), "name": f"lead {n}", "phone": f"+1555{int(n) % 10**7:07d}"}
                         for n in b.get("lead_ids") or ()}
            self.by_token[biz.api_token], self.by_account[biz.account_sid] = biz, biz
            for c in b.get("calls") or ():
                self.calls[c["call_sid"]] = Call(c["call_sid"], biz)

    def wall(self, policy_s: float) -> float:
        return policy_s * self.scale

    def start(self) -> None:
        for i in range(self.n_workers):
            threading.Thread(target=self._worker, name=f"worker-{i + 1}", daemon=True).start()
        threading.Thread(target=self._scheduler, name="scheduler", daemon=True).start()

    def close(self) -> None:
        with self.cv:
            self.closing = True
            self.cv.notify_all()

    def set_workers(self, on: bool) -> None:
        with self.cv:
            self.workers_on = on
            self.cv.notify_all()

    # downloads (callers of the underscore-free helpers hold self.cv) ---------------------

    def enqueue(self, call: Call) -> None:
        call.job = Download(call, call.url)
        self.ready.append(call.job)
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
                while not self.closing and not (self.workers_on and self.ready):
                    self.cv.wait(0.05)
                if self.closing:
                    return
                job = self.ready.popleft()
                job.state = "running"
            self._run(job)

    def _scheduler(self) -> None:
        while not self.closing:
            time.sleep(SCHEDULER_TICK_WALL_S)
            now = time.monotonic()
            with self.cv:
                due = [j for j in self.delayed if j.due <= now]
                if due:
                    self.delayed = [j for j in self.delayed if j.due > now]
                    for job in due:
                        job.state = "queued"
                        self.ready.append(job)
                    self.cv.notify_all()

    def _run(self, job: Download) -> None:
        try:
            body, content_type = self.fetch(job.url)
        except FetchError:
            with self.cv:
                self._failed(job)
            return
        with self.cv:
            job.state = "done"
            if job.call.job is job:
                job.call.audio, job.call.content_type = body, content_type
        if "downloads_twice" in self.bugs:
            try:
                self.fetch(job.url)
            except FetchError:
                pass

    def _failed(self, job: Download) -> None:
        job.failures += 1
        if "loses_recording" in self.bugs:
            job.call.lost, job.state = True, "failed"
        elif job.failures > MAX_RETRIES and "retries_forever" not in self.bugs:
            job.state = "failed"
        else:
            delay = 0.0 if "no_backoff" in self.bugs else backoff_s(job.failures)
            job.state, job.due = "retry_wait", time.monotonic() + self.wall(delay)
            self.delayed.append(job)

    def fetch(self, url: str) -> tuple[bytes, str]:
        """The whole body of a 200 and its Content-Type, else FetchError."""
        import requests

        read_timeout = max(MIN_READ_TIMEOUT_WALL_S, self.wall(READ_TIMEOUT_S))
        try:
            resp = requests.get(url, timeout=(CONNECT_TIMEOUT_WALL_S, read_timeout), allow_redirects=False)
            body = resp.content
        except requests.RequestException as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise FetchError(f"HTTP {resp.status_code}")
        length = resp.headers.get("Content-Length")
        if not body or (length is not None and length.isdigit() and len(body) != int(length)):
            raise FetchError(f"short body: {len(body)} of {length} bytes")
        return body, resp.headers.get("Content-Type", "application/octet-stream")

    def media_host_allowed(self, url: str) -> bool:
        if any(not "\x21" <= c <= "\x7e" for c in url):
            return False
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError:
            return False
        return (parts.scheme == "http" and "@" not in parts.netloc
                and (parts.hostname or "", port) == self.media_host)

    # lead deletion -----------------------------------------------------------------------

    def bulk_delete(self, business: Business, ids: list[int]) -> tuple[DeleteJob, bool]:
        """The business's active job (existing True) or a new one, started."""
        with self.cv:
            active = business.active_delete
            if (active is not None and active.status in DELETE_ACTIVE
                    and "new_delete_job_per_click" not in self.bugs):
                return active, True
            job = DeleteJob(next(self.job_ids), business, ids)
            self.delete_jobs[job.id] = business.active_delete = job
        threading.Thread(target=self._delete, args=(job,), name=f"delete-{job.id}", daemon=True).start()
        return job, False

    def _delete(self, job: DeleteJob) -> None:
        with self.cv:
            while not self.workers_on and not self.closing:
                self.cv.wait(0.05)
            job.status, job.started_at, job.heartbeat = "running", time.time(), time.monotonic()
        for start in range(0, len(job.ids), BATCH_SIZE):
            if start:
                time.sleep(self.wall(BATCH_PAUSE_S))
            with self.cv:
                for lead_id in job.ids[start : start + BATCH_SIZE]:
                    if job.business.leads.pop(lead_id, None) is None:
                        job.skipped += 1  # gone already, or another tenant's: never touched
                    else:
                        job.succeeded += 1
                    job.processed += 1
                job.heartbeat = time.monotonic()
        with self.cv:
            job.status, job.finished_at = "completed", time.time()


def parse_lead_ids(data: object) -> list[int] | None:
    raw = data.get("lead_ids") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        return None
    if any(isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= LEAD_ID_MAX for x in raw):
        return None
    return list(dict.fromkeys(raw))


def make_app(svc: Service):
    from flask import Flask, Response, jsonify, request
    from twilio.request_validator import RequestValidator

    app = Flask("target_service")

    def error(status: int, code: str, message: str):
        resp = jsonify(error=code, message=message)
        resp.status_code = status
        return resp

    def processing():
        resp = jsonify(status="processing")
        resp.status_code = 202
        if "no_retry_after" not in svc.bugs:
            resp.headers["Retry-After"] = str(max(1, math.ceil(svc.wall(RETRY_AFTER_S))))
        return resp

    def bearer() -> Business | None:
        auth = request.headers.get("Authorization", "")
        return svc.by_token.get(auth[len("Bearer "):].strip()) if auth.startswith("Bearer ") else None

    def signed_business(form: dict) -> Business | None:
        business = svc.by_account.get(form.get("AccountSid", ""))
        signature = request.headers.get("X-Twilio-Signature", "")
        if business is None or not signature:
            return None
        return business if RequestValidator(business.auth_token).validate(request.url, form, signature) else None

    def own_call(business: Business, call_sid: str) -> Call | None:
        call = svc.calls.get(call_sid)
        return call if call is not None and call.business is business else None

    def webhook_call(business: Business, call_sid: str) -> Call | None:
        """The business's call, created when unknown; None when another business owns it."""
        call = svc.calls.setdefault(call_sid, Call(call_sid, business))
        return call if call.business is business else None

    @app.before_request
    def authenticate():
        if request.path.startswith("/api/") and bearer() is None:
            return error(401, "unauthorized", "Authorization: Bearer <api_token> required")
        if request.path.startswith("/_admin/") and request.remote_addr not in ("127.0.0.1", "::1"):
            return error(403, "forbidden", "admin hooks answer loopback only")
        return None

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True, variant="fixed", time_scale=svc.scale, bugs=sorted(svc.bugs))

    @app.post("/webhooks/twilio/call-status")
    def call_status():
        form = request.form.to_dict()
        business = signed_business(form)
        if business is None:
            return error(403, "bad_signature", "unknown AccountSid or bad X-Twilio-Signature")
        if not form.get("CallSid"):
            return error(400, "missing_field", "CallSid is required")
        with svc.cv:
            call = webhook_call(business, form["CallSid"])
            if call is None:
                return error(409, "call_conflict", "the CallSid belongs to another account")
            call.status = form.get("CallStatus") or call.status
        return "", 204

    @app.post("/webhooks/twilio/recording")
    def recording():
        form = request.form.to_dict()
        business = signed_business(form)
        if business is None:
            return error(403, "bad_signature", "unknown AccountSid or bad X-Twilio-Signature")
        missing = [k for k in ("CallSid", "RecordingSid", "RecordingUrl") if not form.get(k)]
        if missing:
            return error(400, "missing_field", f"required: {', '.join(missing)}")
        if not svc.media_host_allowed(form["RecordingUrl"]):
            return error(400, "host_not_allowed", "RecordingUrl is not on the allowed media host")
        if form.get("RecordingStatus", "completed") != "completed":
            return "", 204
        with svc.cv:
            call = webhook_call(business, form["CallSid"])
            if call is None:
                return error(409, "call_conflict", "the CallSid belongs to another account")
            if form["RecordingSid"] in svc.recording_sids:
                return "", 204  # a replay (or Twilio's own retry): one job per RecordingSid
            svc.recording_sids.add(form["RecordingSid"])
            call.recording_sid, call.url = form["RecordingSid"], audio_url(form["RecordingUrl"])
            call.audio, call.lost = None, False
            svc.enqueue(call)
        return "", 204

    @app.get("/api/recordings/file/<call_sid>")
    def play(call_sid: str):
        now = time.monotonic()
        with svc.cv:
            call = own_call(bearer(), call_sid)
            if call is None:
                return error(404, "not_found", "no such call")
            if call.audio is not None:
                return Response(call.audio, 200, content_type=call.content_type)
            if call.url is None or call.lost:
                return error(404, "no_recording", "the call has no recording")
            job = call.job
            if job is not None and job.state in DOWNLOAD_ACTIVE:
                waiting = not svc.workers_on and job.state == "queued"
                if waiting and svc.take_mark(call, now) and svc.count_attempt(call, now):
                    return error(500, "worker_not_processing_queue", "no worker is taking the queue")
                return processing()
            if not svc.take_mark(call, now):
                return processing()
            if not svc.workers_on and svc.count_attempt(call, now):
                return error(500, "worker_not_processing_queue", "no worker is taking the queue")
            svc.enqueue(call)
        return processing()

    @app.post("/api/calls/<call_sid>/recording/enqueue")
    def enqueue(call_sid: str):
        with svc.cv:
            call = own_call(bearer(), call_sid)
            if call is None or call.url is None or call.lost:
                return error(404, "not_found", "no such call, or it has no recording")
            if call.audio is not None:
                return jsonify(success=True, reason="cached")
            if call.job is not None and call.job.state in DOWNLOAD_ACTIVE:
                return jsonify(success=True, reason="duplicate")
            svc.enqueue(call)
        return jsonify(success=True, reason="enqueued"), 202

    @app.post("/api/leads/bulk-delete")
    def bulk_delete():
        ids = parse_lead_ids(request.get_json(silent=True))
        if ids is None:
            return error(400, "bad_lead_ids", f"lead_ids must be a non-empty list of integers 1..{LEAD_ID_MAX}")
        job, existing = svc.bulk_delete(bearer(), ids)
        with svc.cv:
            status = job.status
        return jsonify(job_id=job.id, existing=existing, status=status), 202

    def own_job(job_id: int) -> DeleteJob | None:
        job = svc.delete_jobs.get(job_id)
        return job if job is not None and job.business is bearer() else None

    @app.get("/api/jobs/<int:job_id>")
    def job_status(job_id: int):
        with svc.cv:
            job = own_job(job_id)
            return error(404, "not_found", "no such job") if job is None else jsonify(job.as_json(svc.scale))

    @app.post("/api/jobs/<int:job_id>/resume")
    def resume(job_id: int):
        with svc.cv:
            job = own_job(job_id)
            if job is None:
                return error(404, "not_found", "no such job")
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
            page = [dict(lead_map[i]) for i in ids[:limit]]
            total = len(lead_map)
        return jsonify(leads=page, next_after=page[-1]["id"] if len(ids) > limit else None, total=total)

    @app.post("/_admin/workers/stop")
    def workers_stop():
        svc.set_workers(False)
        return jsonify(workers="stopped")

    @app.post("/_admin/workers/start")
    def workers_start():
        svc.set_workers(True)
        return jsonify(workers="started")

    return app


def load_fixtures(path: str) -> dict:
    """The fixtures file, checked; ValueError with one line when it will not do."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    businesses = data.get("businesses") if isinstance(data, dict) else None
    if not isinstance(businesses, list) or not businesses:
        raise ValueError(f"{path}: expected {{\"businesses\": [...]}} with at least one business")
    for i, b in enumerate(businesses):
        missing = [k for k in ("id", "api_token", "account_sid", "auth_token") if not isinstance(b, dict) or k not in b]
        if missing:
            raise ValueError(f"{path}: business {i} lacks {', '.join(missing)}")
        if not all(isinstance(c, dict) and "call_sid" in c for c in b.get("calls") or ()):
            raise ValueError(f"{path}: business {i}: every call needs a call_sid")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in b.get("lead_ids") or ()):
            raise ValueError(f"{path}: business {i}: lead_ids must be integers")
    return data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="target_service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--fixtures", required=True, help="fixtures JSON (the shape `loopfix seed --json` prints)")
    parser.add_argument("--media-host", default="127.0.0.1:9100", help="HOST:PORT recordings may be fetched from")
    parser.add_argument("--time-scale", type=float, default=1.0, help="wall seconds per policy second")
    parser.add_argument("--workers", type=int, default=2, help="download worker threads")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(BUGS), metavar="NAME",
                        help="plant a bug (repeatable): " + ", ".join(sorted(BUGS)))
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be 0..65535")
    if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        parser.error(f"--time-scale {args.time_scale:g}: must be a positive number")
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be at least 1")
    host, _, port = args.media_host.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"--media-host {args.media_host!r}: expected HOST:PORT, e.g. 127.0.0.1:9100")
    args.media = (host.strip("[]").lower(), int(port))
    try:
        args.fixture_data = load_fixtures(args.fixtures)
    except ValueError as exc:
        parser.error(f"--fixtures: {exc}")
    return args


def on_sigterm(*_) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM (a process group's) must not cut the exit
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    svc = Service(args.fixture_data, args.media, args.time_scale, args.workers, set(args.bug))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:  # bound here, not by werkzeug, so a taken port is one line, not werkzeug's advice
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        print(f"target_service: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    server = make_server("127.0.0.1", args.port, make_app(svc), threaded=True, fd=listener.fileno())
    listener.close()  # the server holds its own duplicate of the socket
    signal.signal(signal.SIGTERM, on_sigterm)
    svc.start()
    print(f"target_service listening on http://127.0.0.1:{server.port} (time_scale {args.time_scale:g}, "
          f"workers {args.workers}, bugs: {', '.join(sorted(svc.bugs)) or 'none'})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        svc.close()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
