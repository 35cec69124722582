"""The Target protocol — what loopfix asks of a service under test — and the default adapter,
which speaks reference_app/openapi.yaml.

As Jepsen has its user write a client, a service whose routes, auth or JSON differ from
reference_app's plugs in through a small class named in the target file
(`adapter = "mypkg.loopfix_target:MyService"`): it turns each loopfix operation into the
service's own HTTP calls and each answer into the outcome types below. loopfix judges only
what these outcomes (and the service's fetches of its media stand-in) show.

An adapter is built as `cls(config, http)`: `config` is the TargetConfig, `http` an HttpClient
(a requests-like session bound to the service's base URL; under Locust it is the user's own
client, so every request lands in Locust's statistics under its `name`).
"""
from __future__ import annotations

import importlib
import json
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable
from urllib.parse import urlencode

import requests
from twilio.request_validator import RequestValidator

from loopfix.loadtests.target.config import TargetConfig

HOOK_TIMEOUT_S = 60.0  # wall seconds a hook command may take


class HttpClient(Protocol):
    """The part of a requests/Locust session an adapter uses; `path` is relative to the
    service's base URL, `name` groups requests in statistics."""

    def request(self, method: str, path: str, *, name: str, headers: Mapping[str, str] | None = None,
                data: Any = None) -> Any: ...


class PlainHttp:
    """An HttpClient over requests.Session (for `loopfix target check` and tests)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0):
        self.base_url, self.timeout_s = base_url.rstrip("/"), timeout_s
        self.session = requests.Session()

    def request(self, method: str, path: str, *, name: str, headers=None, data=None):
        return self.session.request(method, self.base_url + path, headers=dict(headers or {}), data=data,
                                    timeout=self.timeout_s, allow_redirects=False)


@dataclass(frozen=True)
class Business:
    """One tenant of the service, from the fixtures."""

    id: Any
    name: str
    api_token: str
    account_sid: str
    auth_token: str
    lead_ids: tuple[int, ...] = ()
    calls: tuple[dict, ...] = ()

    @classmethod
    def from_fixture(cls, b: Mapping[str, Any]) -> "Business":
        return cls(b["id"], str(b.get("name", b["id"])), b["api_token"], b["account_sid"], b["auth_token"],
                   tuple(int(x) for x in b.get("lead_ids") or ()), tuple(b.get("calls") or ()))


@dataclass(frozen=True)
class PlayAnswer:
    """One poll of the player's endpoint: the status, the raw Retry-After header (None when
    absent), the body and its content type, and the JSON `error` code of a failure if any."""

    status: int
    retry_after: str | None = None
    content_type: str = ""
    body: bytes = b""
    error: str | None = None


@dataclass(frozen=True)
class DeleteAnswer:
    """A bulk-delete request's answer: the job it started or joined (None if refused)."""

    status: int
    job_id: str | None = None
    existing: bool | None = None


@dataclass(frozen=True)
class JobState:
    """A delete job as the service reports it: state one of queued | running | paused |
    completed | failed (None when unreadable), `succeeded` leads it deleted if it says."""

    status: int
    state: str | None = None
    succeeded: int | None = None


ACTIVE_JOB_STATES = ("queued", "running", "paused")
FINISHED_JOB_STATES = ("completed", "failed")


class NotSupported(Exception):
    """The adapter has no way to do this operation (e.g. no workers_stop hook)."""


@runtime_checkable
class Target(Protocol):
    """What loopfix does to a service. Every method returns the HTTP status (or an outcome
    carrying it); none raises for an HTTP error answer — only for a transport failure."""

    def create_call(self, business: Business, call_sid: str, *, signed: bool = True) -> int:
        """Twilio's call-status callback for a completed call (creates the service's call)."""

    def send_recording_webhook(self, business: Business, call_sid: str, recording_sid: str, recording_url: str,
                               *, signed: bool = True) -> int:
        """Twilio's recording-status callback: the recording is completed at `recording_url`."""

    def play(self, business: Business, call_sid: str) -> PlayAnswer:
        """One poll of the browser player's endpoint."""

    def bulk_delete(self, business: Business, lead_ids: list[int]) -> DeleteAnswer:
        """One click on "delete selected"."""

    def job_status(self, business: Business, job_id: str) -> JobState:
        """Read a delete job."""

    def resume_job(self, business: Business, job_id: str) -> int:
        """Resume a paused delete job."""

    def list_leads(self, business: Business) -> list[int] | None:
        """Every remaining lead id of the business (None when the service would not say)."""

    def supports(self, operation: str) -> bool:
        """Can this adapter do `operation` (workers_stop, workers_start, resume_job, ...)?"""

    def workers_stop(self) -> None:
        """Stop the service's background workers (NotSupported without a hook)."""

    def workers_start(self) -> None:
        """Start them again."""


def run_hook(command: str, timeout_s: float = HOOK_TIMEOUT_S) -> None:
    """Run a hook's shell command; RuntimeError with its output's last line when it fails."""
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"hook {shlex.split(command)[0]!r} did not finish in {timeout_s:g} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"hook exited {done.returncode}: {said[-1] if said else command}")


class OpenApiTarget:
    """The default adapter: reference_app/openapi.yaml's routes (or the target file's [paths]),
    Bearer tokens, Twilio-signed form webhooks (twilio's own RequestValidator), and the target
    file's [hooks] as shell commands."""

    def __init__(self, config: TargetConfig, http: HttpClient):
        self.config, self.http, self.paths = config, http, config.paths

    # webhooks ---------------------------------------------------------------------------

    def _webhook(self, business: Business, route: str, form: dict[str, str], signed: bool) -> int:
        path = self.paths[route]
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   # a connection of its own: a POST crossing an idle keep-alive close is not retried
                   "Connection": "close"}
        if signed:
            validator = RequestValidator(business.auth_token)
            headers["X-Twilio-Signature"] = validator.compute_signature(self.config.signing_url + path, form)
        resp = self.http.request("POST", path, name=path, headers=headers, data=urlencode(form))
        return int(resp.status_code or 0)

    def create_call(self, business: Business, call_sid: str, *, signed: bool = True) -> int:
        return self._webhook(business, "call_status", {
            "AccountSid": business.account_sid, "CallSid": call_sid, "From": "+15550000001", "To": "+15550000002",
            "CallStatus": "completed"}, signed)

    def send_recording_webhook(self, business: Business, call_sid: str, recording_sid: str, recording_url: str,
                               *, signed: bool = True) -> int:
        return self._webhook(business, "recording", {
            "AccountSid": business.account_sid, "CallSid": call_sid, "RecordingSid": recording_sid,
            "RecordingUrl": recording_url, "RecordingStatus": "completed", "RecordingDuration": "30"}, signed)

    # API --------------------------------------------------------------------------------

    def _auth(self, business: Business) -> dict[str, str]:
        return {"Authorization": f"Bearer {business.api_token}"}

    def play(self, business: Business, call_sid: str) -> PlayAnswer:
        resp = self.http.request("GET", self.paths["play"].format(call_sid=call_sid), name=self.paths["play"],
                                 headers=self._auth(business))
        status = int(resp.status_code or 0)
        headers = resp.headers or {}
        body = resp.content or b""
        error = None
        if status >= 400:
            try:
                error = json.loads(body).get("error")
            except (ValueError, AttributeError):
                error = None
        return PlayAnswer(status, headers.get("Retry-After"), headers.get("Content-Type", ""), body, error)

    def _json(self, resp) -> dict:
        try:
            data = json.loads(resp.content or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def bulk_delete(self, business: Business, lead_ids: list[int]) -> DeleteAnswer:
        path = self.paths["bulk_delete"]
        resp = self.http.request("POST", path, name=path, data=json.dumps({"lead_ids": lead_ids}),
                                 headers={**self._auth(business), "Content-Type": "application/json"})
        status = int(resp.status_code or 0)
        body = self._json(resp) if status < 300 else {}
        job = body.get("job_id")
        return DeleteAnswer(status, None if job is None else str(job), body.get("existing"))

    def job_status(self, business: Business, job_id: str) -> JobState:
        resp = self.http.request("GET", self.paths["job"].format(job_id=job_id), name=self.paths["job"],
                                 headers=self._auth(business))
        status = int(resp.status_code or 0)
        body = self._json(resp) if status == 200 else {}
        return JobState(status, body.get("status"), body.get("succeeded"))

    def resume_job(self, business: Business, job_id: str) -> int:
        path = self.paths["job_resume"]
        resp = self.http.request("POST", path.format(job_id=job_id), name=path, headers=self._auth(business))
        return int(resp.status_code or 0)

    def list_leads(self, business: Business, page: int = 1000) -> list[int] | None:
        ids: list[int] = []
        after: int | None = 0
        while after is not None:
            resp = self.http.request("GET", f"{self.paths['leads']}?after={after}&limit={page}",
                                     name=self.paths["leads"], headers=self._auth(business))
            if resp.status_code != 200:
                return None
            body = self._json(resp)
            ids += [int(lead["id"]) for lead in body.get("leads", [])]
            after = body.get("next_after")
        return ids

    # hooks ------------------------------------------------------------------------------

    def supports(self, operation: str) -> bool:
        if operation in ("workers_stop", "workers_start"):
            return bool(self.config.hooks.get(operation))
        return callable(getattr(self, operation, None))

    def _hook(self, name: str) -> None:
        command = self.config.hooks.get(name)
        if not command:
            raise NotSupported(f"no [hooks] {name} in the target file")
        run_hook(command)

    def workers_stop(self) -> None:
        self._hook("workers_stop")

    def workers_start(self) -> None:
        self._hook("workers_start")


def load_adapter_class(spec: str | None) -> type:
    """The adapter class a target file names ("package.module:Class"), or OpenApiTarget.
    ValueError (one line) when it cannot be imported or is not a class."""
    if not spec:
        return OpenApiTarget
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"adapter {spec!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"adapter {spec!r}: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ValueError(f"adapter {spec!r}: {module_name} has no class {attr!r}")
    return cls


def make_target(config: TargetConfig, http: HttpClient) -> Target:
    return load_adapter_class(config.adapter)(config, http)
