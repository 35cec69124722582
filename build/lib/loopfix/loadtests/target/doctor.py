"""`loopfix target check`: before a storm, does loopfix reach the service the way it will need to?

The doctor drives the service through the same adapter a load run uses and reports, one line
each, what works and what does not, with the fix: the service answers at `url`; each business's
api_token is accepted; a signed call-status webhook is accepted and an unsigned one refused; a
recording on loopfix's media stand-in is accepted, fetched by the service's workers and played
back with the stand-in's bytes; the hooks run (and the workers fetch again after workers_start).
A run against a target that fails here would report the setup's mistakes as the service's bugs.

Everything the doctor creates in the service (calls, a recording) has fresh sids, so running it
twice, or before a load run, leaves nothing a run would trip over.
"""
from __future__ import annotations

import email.utils
import errno
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import requests

from loopfix.loadtests.fixtures import new_sid, recording_url
from loopfix.loadtests.target.adapter import Business, PlainHttp, Target, make_target
from loopfix.loadtests.target.config import HOOKS, TargetConfig
from loopfix.loadtests.twilio_stub import StubServer, StubSettings, recording_body, serve

FETCH_WAIT_MIN_S = 5.0  # wall seconds the doctor waits at least for the service to fetch a recording
FETCH_WAIT_MAX_S = 30.0  # ... and at most
FETCH_WAIT_POLICY_S = 3000.0  # policy seconds: a recording fetched within its first backoff steps
POLL_S = 0.05
PLAY_PAUSE_MAX_S = 1.0  # wall seconds between plays at most, whatever Retry-After says


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report. `skipped`: nothing could be checked (not a failure)."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    skipped: bool = False

    def line(self) -> str:
        if self.skipped:
            return f"skip {self.detail}"
        if self.ok:
            return f"ok   {self.detail}"
        return f"FAIL {self.detail}" + (f" — {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch_wait_s(time_scale: float) -> float:
    """How long the doctor waits for a fetch: FETCH_WAIT_POLICY_S at the time scale, within
    [FETCH_WAIT_MIN_S, FETCH_WAIT_MAX_S] wall seconds."""
    return max(FETCH_WAIT_MIN_S, min(FETCH_WAIT_MAX_S, FETCH_WAIT_POLICY_S * time_scale))


def transport_reason(exc: BaseException, timeout_s: float | None = None) -> str:
    """A requests exception as a few words: "connection refused", "no answer in 10 s", ..."""
    if isinstance(exc, requests.Timeout):
        return f"no answer in {timeout_s:g} s" if timeout_s else "timed out"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found.group(1).strip().rstrip(".")
    return type(exc).__name__


def retry_after_s(value: str | None, default: float = 0.5) -> float:
    """An HTTP Retry-After (whole seconds or a date) as wall seconds to wait."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def _ok(status: int) -> bool:
    return 200 <= status < 300


class Doctor:
    """One check of one target; `run()` fills `findings` in order and calls `on_finding` with
    each as it is made (a long wait shows the lines before it)."""

    def __init__(self, config: TargetConfig, on_finding: Callable[[Finding], None] | None = None,
                 http: Any = None, target: Target | None = None):
        self.config = config
        self.http = http or PlainHttp(config.url)
        self.target = target
        self.on_finding = on_finding
        self.findings: list[Finding] = []
        self.file = config.source.name if config.source else "the target file"
        self.fixtures_file = config.fixtures_path.name if config.fixtures_path else "the fixtures"
        self.media = f"{config.media_host}:{config.media_port}"
        self.stub: StubServer | None = None
        self.first_fetch_s = 0.0  # wall seconds the service took to fetch the first recording

    def add(self, name: str, ok: bool, detail: str, fix: str | None = None, skipped: bool = False) -> Finding:
        finding = Finding(name, ok, detail, fix, skipped)
        self.findings.append(finding)
        if self.on_finding:
            self.on_finding(finding)
        return finding

    def fail_transport(self, name: str, exc: Exception) -> None:
        if isinstance(exc, requests.RequestException):
            self.add(name, False, f"{name}: lost the service at {self.config.url}: "
                     f"{transport_reason(exc, getattr(self.http, 'timeout_s', None))}",
                     "is the service still running? see its log")
        else:  # an adapter's own bug: say where, in one line
            self.add(name, False, f"{name}: the adapter raised {type(exc).__name__}: {exc}",
                     f"fix the adapter class {self.config.adapter or 'OpenApiTarget'}")

    def status_fix(self, status: int, route: str) -> str:
        if status == 404:
            return f"no such route: check `url` in {self.file}, or set [paths] {route} to the service's route"
        if status in (401, 403):
            return "the service refused it: see its log"
        if status >= 500:
            return "the service failed: see its log"
        return "see the service's log for why"

    # ---------------------------------------------------------------------------- steps

    def run(self) -> list[Finding]:
        try:
            target = self.target or make_target(self.config, self.http)
        except Exception as exc:  # noqa: BLE001 - a user's adapter failing to build is a finding
            self.add("adapter", False, f"cannot build the adapter {self.config.adapter}: {type(exc).__name__}: {exc}",
                     "fix its __init__(config, http)")
            return self.findings
        if not self.reach():
            return self.findings
        businesses = [Business.from_fixture(b) for b in self.config.businesses]
        tokens_ok = self.tokens(target, businesses)
        signed_ok = self.signed_webhooks(target, businesses)
        self.unsigned_webhook(target, businesses[0])
        usable = [b for b in businesses if b.id in tokens_ok and b.id in signed_ok]
        if not usable:
            self.add("media", True, "recording on the media stand-in not checked: no business passed both the "
                     "api_token and the webhook checks", skipped=True)
        try:
            fetched = bool(usable) and self.recording(target, usable[0])
            self.hooks(target, usable[0] if fetched else None)
        finally:
            self.stop_stub()
        return self.findings

    def reach(self) -> bool:
        path = self.config.paths["healthz"]
        try:
            resp = self.http.request("GET", path, name=path)
        except requests.RequestException as exc:
            self.add("reach", False, f"cannot reach {self.config.url}: "
                     f"{transport_reason(exc, getattr(self.http, 'timeout_s', None))}",
                     f"is the service running? check `url` in {self.file}")
            return False
        status = int(resp.status_code or 0)
        if not _ok(status):
            self.add("reach", False, f"{self.config.url} answers GET {path} with {status}",
                     self.status_fix(status, "healthz"))
            return True
        self.add("reach", True, f"{self.config.url} answers GET {path} with {status}")
        try:
            said = resp.json().get("time_scale")
        except (ValueError, AttributeError):
            said = None
        if isinstance(said, (int, float)) and not isinstance(said, bool) and said > 0 \
                and abs(said - self.config.time_scale) > 1e-9 * max(said, self.config.time_scale):
            self.add("time_scale", False, f"the service says it runs at time_scale {said:g}, {self.file} says "
                     f"{self.config.time_scale:g}", f"set time_scale = {said:g} in {self.file}, or start the "
                     f"service at {self.config.time_scale:g}")
        return True

    def tokens(self, target: Target, businesses: list[Business]) -> set:
        good = set()
        for b in businesses:
            try:
                ids = target.list_leads(b)
            except Exception as exc:  # noqa: BLE001
                self.fail_transport(f"business {b.id}: api_token", exc)
                continue
            if ids is None:
                self.add("api_token", False, f"business {b.id}: api_token refused "
                         f"(GET {self.config.paths['leads']} did not answer 200)",
                         f"update api_token in the fixtures ({self.fixtures_file})")
                continue
            good.add(b.id)
            gone = sorted(set(b.lead_ids) - set(ids))
            if gone:
                self.add("lead_ids", False, f"business {b.id}: {len(gone)} of the {len(b.lead_ids)} lead_ids in "
                         f"the fixtures are not among its leads (e.g. {gone[0]})",
                         f"seed fresh leads and list them in lead_ids in {self.fixtures_file} "
                         f"(a bulk-delete run deletes them)")
            else:
                self.add("api_token", True, f"business {b.id}: api_token accepted "
                         f"({len(ids)} lead{'' if len(ids) == 1 else 's'})")
        return good

    def signed_webhooks(self, target: Target, businesses: list[Business]) -> set:
        good = set()
        path = self.config.paths["call_status"]
        for b in businesses:
            try:
                status = target.create_call(b, new_sid("CA"))
            except Exception as exc:  # noqa: BLE001
                self.fail_transport(f"business {b.id}: signed webhook", exc)
                continue
            if _ok(status):
                good.add(b.id)
                self.add("signed_webhook", True,
                         f"business {b.id}: a signed call-status webhook is accepted ({status})")
            elif status in (401, 403):
                self.add("signed_webhook", False,
                         f"business {b.id}: a signed call-status webhook is refused ({status})",
                         "auth_token (or account_sid) in the fixtures does not match the service's, or the service "
                         "signs against another URL (set webhook_url)")
            else:
                self.add("signed_webhook", False, f"business {b.id}: a signed call-status webhook to {path} "
                         f"answered {status}", self.status_fix(status, "call_status"))
        return good

    def unsigned_webhook(self, target: Target, b: Business) -> None:
        try:
            status = target.create_call(b, new_sid("CA"), signed=False)
        except Exception as exc:  # noqa: BLE001
            self.fail_transport("unsigned webhook", exc)
            return
        if 400 <= status < 500:
            self.add("unsigned_webhook", True, f"an unsigned call-status webhook is refused ({status})")
        elif _ok(status):
            self.add("unsigned_webhook", False, f"the service accepts unsigned webhooks ({status})",
                     "check X-Twilio-Signature on every webhook and answer 403 when it does not match")
        else:
            self.add("unsigned_webhook", False, f"an unsigned call-status webhook answered {status}",
                     "refuse it with 403 (a 5xx makes Twilio retry it)")

    # ---------------------------------------------------------------------------- media

    def start_stub(self) -> bool:
        host, port = self.config.media_host, self.config.media_port
        try:
            self.stub = serve(host, port, StubSettings(time_scale=self.config.time_scale))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fix = (f"stop what listens there (a `loopfix twilio-stub` left running?) or set another [media] "
                       f"port in {self.file} that the service allows")
            else:
                fix = f"[media] host in {self.file} must be an address of this machine that the service can reach"
            self.add("media", False, f"cannot serve the media stand-in on {self.media}: {exc.strerror or exc}", fix)
            return False
        threading.Thread(target=self.stub.serve_forever, name="media-stand-in", daemon=True).start()
        return True

    def stop_stub(self) -> None:
        if self.stub is not None:
            self.stub.shutdown()
            self.stub.server_close()
            self.stub = None

    def fetched(self, recording_sid: str) -> dict[str, int]:
        assert self.stub is not None
        return self.stub.ledger.snapshot()["recordings"].get(recording_sid, {})

    def send_recording(self, target: Target, b: Business) -> tuple[int, str, str]:
        """Create a fresh call and send its recording webhook with a URL on the stand-in, as
        Twilio sends it (no extension); (status of the webhook, call_sid, recording_sid)."""
        call_sid, rec_sid = new_sid("CA"), new_sid("RE")
        status = target.create_call(b, call_sid)
        if not _ok(status):
            return status, call_sid, rec_sid
        url = recording_url(self.config.media_url, b.account_sid, rec_sid, ext="")
        return target.send_recording_webhook(b, call_sid, rec_sid, url), call_sid, rec_sid

    def wait_fetch(self, target: Target, b: Business, call_sid: str, rec_sid: str) -> tuple[dict, float]:
        """Wait for a completed fetch of `rec_sid`; halfway, one play, for a service that fetches
        only when asked. Returns the ledger entry and the wall seconds waited."""
        budget = fetch_wait_s(self.config.time_scale)
        start = time.monotonic()
        nudged = False
        while True:
            entry = self.fetched(rec_sid)
            waited = time.monotonic() - start
            if entry.get("completed") or waited > budget:
                return entry, waited
            if not nudged and waited > budget / 2:
                nudged = True
                target.play(b, call_sid)
            time.sleep(POLL_S)

    def recording(self, target: Target, b: Business) -> bool:
        """Step 5; True when the service fetched the recording (the workers work)."""
        if not self.start_stub():
            return False
        try:
            status, call_sid, rec_sid = self.send_recording(target, b)
            if not _ok(status):
                if status in (400, 403, 422):
                    self.add("media", False, f"the service refuses recording URLs on {self.media} ({status})",
                             f"add {self.media} to its media allowlist (reference_app: "
                             f"LOOPFIX_MEDIA_HOSTS={self.media})")
                else:
                    self.add("media", False, f"business {b.id}: a recording webhook answered {status}",
                             self.status_fix(status, "recording"))
                return False
            self.add("media", True, f"a recording on {self.media} is accepted ({status})")
            entry, waited = self.wait_fetch(target, b, call_sid, rec_sid)
        except Exception as exc:  # noqa: BLE001
            self.fail_transport("recording", exc)
            return False
        if not entry.get("completed"):
            if entry.get("requests"):
                self.add("fetch", False, f"the service fetched the recording {entry['requests']} time(s) in "
                         f"{waited:.0f} s but never read it whole", "see its log: the stand-in answered 200")
            else:
                self.add("fetch", False, f"the service accepted the recording but never fetched it from {self.media} "
                         f"in {waited:.0f} s — are its workers running?",
                         f"start its workers, and let them reach {self.media}")
            return False
        self.first_fetch_s = waited
        self.add("fetch", True, f"the service fetched the recording from {self.media} in {waited:.1f} s")
        try:
            self.play_until_200(target, b, call_sid, rec_sid)
        except Exception as exc:  # noqa: BLE001
            self.fail_transport("play", exc)
        return True

    def play_until_200(self, target: Target, b: Business, call_sid: str, rec_sid: str) -> None:
        size = self.stub.settings.size_bytes if self.stub else 0
        served = {recording_body(rec_sid, ext, size) for ext in (".mp3", ".wav")}
        path = self.config.paths["play"]
        budget = fetch_wait_s(self.config.time_scale)
        deadline = time.monotonic() + budget
        last = None
        while time.monotonic() < deadline:
            answer = target.play(b, call_sid)
            last = answer.status
            if answer.status == 200:
                if answer.body in served:
                    self.add("play", True, f"the recording plays: 200 with the stand-in's {len(answer.body)} bytes")
                else:
                    self.add("play", False, f"the recording plays (200) but its {len(answer.body)} bytes are not the "
                             f"stand-in's", "serve the downloaded audio as fetched")
                return
            if answer.status != 202:
                said = f" {answer.error}" if answer.error else ""
                self.add("play", False, f"playing the fetched recording ({path}) answered {answer.status}{said}",
                         self.status_fix(answer.status, "play"))
                return
            pause = min(retry_after_s(answer.retry_after), PLAY_PAUSE_MAX_S, max(0.0, deadline - time.monotonic()))
            time.sleep(max(POLL_S, pause))
        self.add("play", False, f"the service fetched the recording but {path} never answered 200 in "
                 f"{budget:.0f} s (last: {last})", "see its log: the download should become playable")

    # ---------------------------------------------------------------------------- hooks

    def hooks(self, target: Target, b: Business | None) -> None:
        """Run workers_stop then workers_start (start also when stop failed or the user
        interrupts, so the doctor never leaves the workers stopped). With both hooks and workers
        that fetched before: a recording sent while they are stopped must not be fetched until
        workers_start, and then must be (a run's outage faults rely on both)."""
        present = [name for name in HOOKS if target.supports(name)]
        if not present:
            self.add("hooks", True, "no [hooks] workers_stop/workers_start: worker outages will be skipped and "
                     "fail-fast reported not observable", skipped=True)
            return
        probe = b is not None and self.stub is not None and len(present) == len(HOOKS)
        held: tuple[str, str] | None = None
        ran_ok = {}
        try:
            if "workers_stop" in present:
                ran_ok["workers_stop"] = self.run_hook(target, "workers_stop")
                if ran_ok["workers_stop"] and probe:
                    held = self.probe_stopped(target, b)
        finally:
            if "workers_start" in present:
                ran_ok["workers_start"] = self.run_hook(target, "workers_start")
        if probe and held and all(ran_ok.values()):
            self.probe_started(target, b, *held)

    def probe_stopped(self, target: Target, b: Business) -> tuple[str, str] | None:
        """Send a recording while the workers are stopped and watch for a quiet window (ten
        times the first fetch's latency, 1-5 s); its (call_sid, recording_sid) when none came."""
        quiet = min(5.0, max(1.0, 10 * self.first_fetch_s))
        try:
            status, call_sid, rec_sid = self.send_recording(target, b)
            if not _ok(status):
                self.add("workers_stop", False, f"while the workers were stopped a recording webhook answered "
                         f"{status}", "accept webhooks while the workers are down (Twilio does not wait)")
                return None
            deadline = time.monotonic() + quiet
            while time.monotonic() < deadline and not self.fetched(rec_sid).get("requests"):
                time.sleep(POLL_S)
        except Exception as exc:  # noqa: BLE001
            self.fail_transport("workers_stop", exc)
            return None
        if self.fetched(rec_sid).get("requests"):
            self.add("workers_stop", False, "the service fetched a recording while its workers were stopped",
                     f"[hooks] workers_stop in {self.file} must stop every worker that fetches recordings")
            return None
        self.add("workers_stop", True, f"while the workers were stopped nothing was fetched ({quiet:.1f} s)")
        return call_sid, rec_sid

    def probe_started(self, target: Target, b: Business, call_sid: str, rec_sid: str) -> None:
        try:
            entry, waited = self.wait_fetch(target, b, call_sid, rec_sid)
        except Exception as exc:  # noqa: BLE001
            self.fail_transport("workers_start", exc)
            return
        if entry.get("completed"):
            self.add("workers_start", True, f"after workers_start the workers fetch again: the recording sent "
                     f"while they were stopped, in {waited:.1f} s")
        else:
            self.add("workers_start", False, f"the recording sent while the workers were stopped was never fetched "
                     f"in {waited:.0f} s after workers_start", f"[hooks] workers_start in {self.file} must leave "
                     f"the workers running, and the service must keep a recording that came while they were down")

    def run_hook(self, target: Target, name: str) -> bool:
        start = time.monotonic()
        try:
            getattr(target, name)()
        except Exception as exc:  # noqa: BLE001 - RuntimeError from run_hook, or an adapter's own
            fix = f"fix [hooks] {name} in {self.file} (it must exit 0)"
            if name == "workers_start":
                fix += "; the service's workers may be stopped now"
            self.add(name, False, f"hook {name} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                     fix)
            return False
        self.add(name, True, f"hook {name} ran ({time.monotonic() - start:.1f} s)")
        return True


def check(config: TargetConfig, on_finding: Callable[[Finding], None] | None = None,
          http: Any = None, target: Target | None = None) -> list[Finding]:
    """Check a loaded target: every finding in order (see the module docstring). `http` and
    `target` replace the PlainHttp client and the file's adapter (tests drive fakes)."""
    return Doctor(config, on_finding, http, target).run()
