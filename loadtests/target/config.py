"""The target file (`loopfix target init` writes a commented example): where the service is,
the time scale it runs at, its fixtures, loopfix's media stand-in it must accept recording URLs
on, the policy it promises, its routes, optional hooks and an optional adapter class.

`load_target(path)` reads and checks it whole: every mistake becomes one line naming the
setting (`url: ...`, `fixtures: ...`, `[policy] max_retries: ...`), and all of them are raised
together in one `TargetFileError`, so a user fixes the file in one pass, not one error a run.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from loopfix.reference_app.policy import Policy, make_policy

DEFAULT_PATHS: dict[str, str] = {
    "healthz": "/healthz",
    "call_status": "/webhooks/twilio/call-status",
    "recording": "/webhooks/twilio/recording",
    "play": "/api/recordings/file/{call_sid}",
    "enqueue": "/api/calls/{call_sid}/recording/enqueue",
    "bulk_delete": "/api/leads/bulk-delete",
    "job": "/api/jobs/{job_id}",
    "job_resume": "/api/jobs/{job_id}/resume",
    "leads": "/api/leads",
}
HOOKS = ("workers_stop", "workers_start")
# What an adapter class must have for loopfix to drive a service with it (the Target protocol).
ADAPTER_METHODS = ("create_call", "send_recording_webhook", "play", "bulk_delete", "job_status", "list_leads",
                   "supports")
TOP_LEVEL = ("url", "time_scale", "fixtures", "media", "policy", "paths", "hooks", "adapter", "webhook_url")
MEDIA_KEYS = ("host", "port")
SID = {prefix: re.compile(rf"{prefix}[0-9a-fA-F]{{32}}") for prefix in ("AC", "CA", "RE")}
MAX_FIXTURE_PROBLEMS = 10  # past this many, one line says how many more


class TargetFileError(ValueError):
    """A target file with mistakes; `problems` holds one line per mistake, str() all of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class TargetConfig:
    """A parsed, checked target file. Paths in it are resolved against the file's folder."""

    url: str
    fixtures: dict[str, Any]
    media_host: str = "127.0.0.1"
    media_port: int = 9100
    time_scale: float = 1.0
    policy: dict[str, Any] = field(default_factory=dict)  # overrides of loopfix's fixed policy
    paths: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATHS))
    hooks: dict[str, str] = field(default_factory=dict)
    adapter: str | None = None  # "package.module:Class"
    webhook_url: str | None = None  # the base URL the service signs webhooks against (default: url)
    source: Path | None = None  # the target file
    fixtures_path: Path | None = None  # the fixtures file, resolved

    @property
    def media_url(self) -> str:
        return f"http://{self.media_host}:{self.media_port}"

    @property
    def signing_url(self) -> str:
        return (self.webhook_url or self.url).rstrip("/")

    @property
    def businesses(self) -> list[dict[str, Any]]:
        return list(self.fixtures.get("businesses", []))

    def make_policy(self) -> Policy:
        """The Policy the service promises: loopfix's fixed policy at this time scale with the
        file's [policy] overrides (checked by load_target, so this does not raise for a loaded file)."""
        return make_policy("fixed", [], self.time_scale, self.policy)


# --------------------------------------------------------------------------- checks


def _url_problem(name: str, value: Any) -> str | None:
    example = '"http://127.0.0.1:8000"'
    if not isinstance(value, str):
        return f"{name}: must be an http(s) URL like {example}, not {value!r}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"{name}: {value!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name}: must be an http(s) URL with a host, like {example}, not {value!r}"
    return None


def _time_scale(raw: Any, problems: list[str]) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not (math.isfinite(raw) and raw > 0):
        problems.append(f"time_scale: must be a positive number (wall seconds per policy second, e.g. 0.01), "
                        f"not {raw!r}")
        return 1.0
    return float(raw)


def _table(doc: Mapping[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"{name}: must be a table ([{name}]), not {value!r}")
        return {}
    return value


def _business_problems(i: int, b: Any) -> list[str]:
    if not isinstance(b, dict):
        return [f"businesses[{i}] must be an object, not {type(b).__name__}"]
    where = f"business {b['id']!r}" if "id" in b else f"businesses[{i}]"
    out = []
    if "id" not in b:
        out.append(f"{where}: id missing")
    elif isinstance(b["id"], bool) or not isinstance(b["id"], (int, str)):
        out.append(f"{where}: id must be an integer or a string")
    for key in ("api_token", "auth_token"):
        if not isinstance(b.get(key), str) or not b.get(key):
            out.append(f"{where}: {key} missing" if key not in b else f"{where}: {key} must be a non-empty string")
    account = b.get("account_sid")
    if account is None:
        out.append(f"{where}: account_sid missing")
    elif not isinstance(account, str) or not SID["AC"].fullmatch(account):
        out.append(f"{where}: account_sid must be AC + 32 hex digits, not {account!r}")
    calls = b.get("calls") or []
    if not isinstance(calls, list):
        out.append(f"{where}: calls must be a list")
        calls = []
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            out.append(f"{where}: calls[{j}] must be an object")
            continue
        if not isinstance(call.get("call_sid"), str) or not SID["CA"].fullmatch(call["call_sid"]):
            out.append(f"{where}: calls[{j}].call_sid must be CA + 32 hex digits, not {call.get('call_sid')!r}")
        rec = call.get("recording_sid")
        if rec is not None and (not isinstance(rec, str) or not SID["RE"].fullmatch(rec)):
            out.append(f"{where}: calls[{j}].recording_sid must be RE + 32 hex digits, not {rec!r}")
    leads = b.get("lead_ids") or []
    if not isinstance(leads, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in leads):
        out.append(f"{where}: lead_ids must be a list of integers")
    return out


def _fixtures(raw: Any, folder: Path, problems: list[str]) -> tuple[dict[str, Any], Path | None]:
    if raw is None:
        problems.append("fixtures: missing; name the JSON file of businesses (`loopfix seed --json` prints one)")
        return {}, None
    if not isinstance(raw, str) or not raw:
        problems.append(f"fixtures: must be a file name, not {raw!r}")
        return {}, None
    path = (folder / Path(raw).expanduser()).resolve()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"fixtures: {path} does not exist")
        return {}, path
    except OSError as exc:
        problems.append(f"fixtures: cannot read {path} ({exc.strerror or exc})")
        return {}, path
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"fixtures: {path} is not JSON ({exc})")
        return {}, path
    businesses = data.get("businesses") if isinstance(data, dict) else None
    if not isinstance(businesses, list) or not businesses:
        problems.append(f'fixtures: {path} must be an object {{"businesses": [...]}} with at least one business')
        return {}, path
    found: list[str] = []
    for i, b in enumerate(businesses):
        found += _business_problems(i, b)
    ids = [b.get("id") for b in businesses if isinstance(b, dict) and "id" in b]
    if len({json.dumps(x) for x in ids}) < len(ids):
        found.append("two businesses have the same id")
    problems += [f"fixtures: {line}" for line in found[:MAX_FIXTURE_PROBLEMS]]
    if len(found) > MAX_FIXTURE_PROBLEMS:
        problems.append(f"fixtures: ... and {len(found) - MAX_FIXTURE_PROBLEMS} more problems in {path}")
    return data, path


def _media(table: dict[str, Any], problems: list[str]) -> tuple[str, int]:
    for key in sorted(set(table) - set(MEDIA_KEYS)):
        problems.append(f"[media] {key}: unknown setting; known: {', '.join(MEDIA_KEYS)}")
    host, port = table.get("host", "127.0.0.1"), table.get("port", 9100)
    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]", host):
        problems.append(f"[media] host: must be a host name or IP address (no scheme or port), not {host!r}")
        host = "127.0.0.1"
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(f"[media] port: must be a port number 1-65535, not {port!r}")
        port = 9100
    return host, port


def _policy_names() -> list[str]:
    """The constants a [policy] table may set (make_policy's, with its max_retries alias)."""
    fixed = ("variant", "extra_faults", "time_scale", "faults")
    return sorted([f.name for f in dataclasses.fields(Policy) if f.name not in fixed] + ["max_retries"])


def _policy(table: dict[str, Any], time_scale: float, problems: list[str]) -> None:
    names = _policy_names()
    for name, value in table.items():
        if name == "time_scale":
            problems.append("[policy] time_scale: set time_scale at the top of the file, not in [policy]")
            continue
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            problems.append(f"[policy] {name}: not a policy constant{hint} (`loopfix policy` lists them)")
            continue
        if isinstance(value, bool):
            problems.append(f"[policy] {name}: takes a number, not {str(value).lower()}")
            continue
        try:
            make_policy("fixed", [], time_scale, {name: value})
        except ValueError as exc:
            problems.append(f"[policy] {name}: {exc}")


def _paths(table: dict[str, Any], problems: list[str]) -> dict[str, str]:
    paths = dict(DEFAULT_PATHS)
    for key, value in table.items():
        if key not in DEFAULT_PATHS:
            problems.append(f"[paths] {key}: unknown route; known: {', '.join(DEFAULT_PATHS)}")
            continue
        if not isinstance(value, str) or not value.startswith("/"):
            problems.append(f"[paths] {key}: must be a path starting with /, not {value!r}")
            continue
        needed = set(re.findall(r"{(\w+)}", DEFAULT_PATHS[key]))
        given = set(re.findall(r"{([^}]*)}", value))
        if given != needed:
            want = " and ".join(f"{{{n}}}" for n in sorted(needed)) or "no {placeholder}"
            problems.append(f"[paths] {key}: must contain {want}, not {value!r}")
            continue
        paths[key] = value
    return paths


def _hooks(table: dict[str, Any], problems: list[str]) -> dict[str, str]:
    hooks: dict[str, str] = {}
    for key, value in table.items():
        if key not in HOOKS:
            problems.append(f"[hooks] {key}: unknown hook; known: {', '.join(HOOKS)}")
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"[hooks] {key}: must be a shell command, not {value!r}")
        else:
            hooks[key] = value
    if "workers_stop" in hooks and "workers_start" not in hooks:
        problems.append("[hooks] workers_stop: needs workers_start too (loopfix starts again the workers it stops)")
    return hooks


def _adapter(spec: Any, folder: Path, problems: list[str]) -> str | None:
    """Import the adapter now, so a typo is a line here, not a crash mid-run. The target file's
    folder goes on sys.path: an adapter module kept beside the file imports as it would with
    `python -m` from there (the `loopfix` script does not put the working directory on it)."""
    from loopfix.loadtests.target.adapter import load_adapter_class  # here: adapter imports this module

    if spec is None:
        return None
    if not isinstance(spec, str) or not spec:
        problems.append(f"adapter: must be 'package.module:Class', not {spec!r}")
        return None
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    try:
        cls = load_adapter_class(spec)
    except ValueError as exc:
        problems.append(f"adapter: {str(exc).removeprefix(f'adapter {spec!r}: ')}")
        return spec
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import: say how, in one line
        problems.append(f"adapter: importing {spec.partition(':')[0]!r} failed: {type(exc).__name__}: {exc}")
        return spec
    missing = [m for m in ADAPTER_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        problems.append(f"adapter: {spec} lacks {', '.join(missing)} (see the Target protocol in "
                        f"loadtests/target/adapter.py)")
    return spec


# --------------------------------------------------------------------------- loading


def load_target(path: str | Path) -> TargetConfig:
    """Read and check a target file; TargetFileError with one line per mistake."""
    path = Path(path).expanduser()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TargetFileError([f"{path}: no such file (write one with `loopfix target init {path}`)"]) from None
    except OSError as exc:
        raise TargetFileError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:
        raise TargetFileError([f"{path}: not UTF-8 text ({exc.reason})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetFileError([f"{path}: not TOML ({exc})"]) from None
    folder = path.resolve().parent
    problems: list[str] = []
    for key in doc:
        if key not in TOP_LEVEL:
            problems.append(f"{key}: unknown setting; known: {', '.join(TOP_LEVEL)}")
    url = doc.get("url")
    if url is None:
        problems.append('url: missing; the base URL of the service, like "http://127.0.0.1:8000"')
    elif problem := _url_problem("url", url):
        problems.append(problem)
    webhook_url = doc.get("webhook_url")
    if webhook_url is not None and (problem := _url_problem("webhook_url", webhook_url)):
        problems.append(problem)
    time_scale = _time_scale(doc.get("time_scale", 1.0), problems)
    fixtures, fixtures_path = _fixtures(doc.get("fixtures"), folder, problems)
    media_host, media_port = _media(_table(doc, "media", problems), problems)
    policy = _table(doc, "policy", problems)
    _policy(policy, time_scale, problems)
    paths = _paths(_table(doc, "paths", problems), problems)
    hooks = _hooks(_table(doc, "hooks", problems), problems)
    adapter = _adapter(doc.get("adapter"), folder, problems)
    if problems:
        raise TargetFileError(problems)
    return TargetConfig(url=url, fixtures=fixtures, media_host=media_host, media_port=media_port,
                        time_scale=time_scale, policy=dict(policy), paths=paths, hooks=hooks, adapter=adapter,
                        webhook_url=webhook_url, source=path.resolve(), fixtures_path=fixtures_path)


INIT_TEXT = '''\
# loopfix target file: point loopfix's storms and invariant checks at your own service.
# Check it with `loopfix target check target.toml`; run with
# `loopfix loadtest conformance --target target.toml`.

# Base URL of the service under test (http or https, with a host).
url = "http://127.0.0.1:8000"

# Wall seconds per policy second the service runs at: the same scale its own timers use
# (reference_app: LOOPFIX_TIME_SCALE). 0.01 runs a 1,860 s backoff in ~19 s. Default 1.0.
time_scale = 0.01

# The businesses loopfix drives, in the shape `loopfix seed --json` prints (relative to this
# file's folder): {"businesses": [{"id", "name", "api_token", "account_sid" (AC + 32 hex),
# "auth_token", "calls": [{"call_sid", "recording_sid"}], "lead_ids": [...]}]}.
# "calls" may be empty: loopfix creates calls itself with signed call-status webhooks.
# For reference_app: loopfix seed --businesses 2 --calls 0 --leads 200 --json > fixtures.json
fixtures = "fixtures.json"

# The base URL the service computes X-Twilio-Signature against, when it sits behind a proxy
# and sees another URL than `url` (default: url).
# webhook_url = "https://calls.example.com"

# A class that drives a service whose routes, auth or JSON differ from reference_app's
# (the Target protocol in loadtests/target/adapter.py). Default: reference_app/openapi.yaml.
# adapter = "mypkg.loopfix_target:MyService"

# loopfix's Twilio stand-in serves recordings here while it runs; the service must accept
# recording URLs on this host:port (reference_app: LOOPFIX_MEDIA_HOSTS=127.0.0.1:9100).
[media]
host = "127.0.0.1"
port = 9100

# What the service promises, in policy seconds; anything left out is loopfix's fixed policy
# (`loopfix policy` lists every constant). The checkers hold the service to these.
[policy]
max_retries = 5            # recording retries before giving up
# backoff_base_s = 60.0    # first retry's wait; doubles each retry ...
# backoff_cap_s = 1200.0   # ... up to this
# fail_fast_max_attempts = 3
# fail_fast_window_s = 600.0
# playback_mark_ttl_s = 15.0
# retry_after_s = 3.0

# Routes, when they differ from reference_app/openapi.yaml's (keep the {placeholders}).
[paths]
# healthz = "/healthz"
# call_status = "/webhooks/twilio/call-status"
# recording = "/webhooks/twilio/recording"
# play = "/api/recordings/file/{call_sid}"
# enqueue = "/api/calls/{call_sid}/recording/enqueue"
# bulk_delete = "/api/leads/bulk-delete"
# job = "/api/jobs/{job_id}"
# job_resume = "/api/jobs/{job_id}/resume"
# leads = "/api/leads"

# Shell commands that stop and start the service's background workers (exit 0 = done).
# Without them the worker-outage faults are skipped and fail-fast is reported not observable.
[hooks]
# workers_stop = "curl -fsS -X POST http://127.0.0.1:8000/_admin/workers/stop"
# workers_start = "curl -fsS -X POST http://127.0.0.1:8000/_admin/workers/start"
'''
