"""A Twilio stand-in: serves recordings at Twilio's path, slowly or badly on demand, and keeps a
ledger of downloads per recording that tests and checkers read over HTTP.

- GET /2010-04-01/Accounts/<AC>/Recordings/<RE>[.mp3|.wav|.json] → playable audio (silent MPEG
  frames or PCM WAV) of `size_bytes`, or the recording's JSON metadata; after `latency_s`, at
  `bandwidth_bps` (`latency_sigma` > 0: a lognormal latency around `latency_s`); a 503 with probability `error_rate`; a body cut short with probability
  `truncate_rate`; 404 while the recording is listed in `missing`.
- `script`: faults for the next audio requests, one each, in order (then back to the rates):
  "503" / "500" / "429" (an error answer; a list of them is a 5xx burst), "truncate" (headers
  promise the whole body, half is sent, the connection closes), "stall" (half the body, then
  silence for `stall_s`: the client's read timeout fires), "timeout" (no answer at all for
  `stall_s`), "slow" (the whole body, paced over `slow_s`: a healthy slow download), "ok".
- `plans`: the same modes per recording ({RE: ["503", "timeout", "ok"]}): that recording's
  next fetches take them in order (before `script` and the rates), then it is served well;
  `doomed`: recordings whose every fetch answers 503.
- Each recording's audio carries its own sid inside (same length and format as any other), so
  a client can tell one recording's bytes from another's.
- With a history directory (`history_dir`, `epoch`), every audio fetch is recorded as it
  happens: `download.start` when it arrives and `download.end` when it ends (ok, bytes, status,
  the fault served, the sha256 of a complete body) — what a service under test fetched, seen
  from outside it (`source: target`). A stalled fetch ends when the client gives up and closes.
- GET /_ledger → {"recordings": {RE: {"requests": n, "completed": n, "bytes": n, "sending": n,
  "partial": n}}}: `sending` transfers under way now, `partial` transfers that ended short.
- GET /_config, POST /_config (JSON, any subset of the settings) → change behaviour mid-run.

Durations are policy seconds, multiplied by `time_scale` like everything else in loopfix.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import select
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loopfix.harness.scenario import FETCH_MODES
from loopfix.reference_app.events import HistoryWriter

PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Recordings/(RE[0-9a-fA-F]{32})(\.mp3|\.wav|\.json)?$")
SCRIPT_MODES = FETCH_MODES
ERROR_MODES = ("429", "500", "503")
MP3_FRAME = b"\xff\xfb\x90\x00" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, silent: 26 ms
CLOSED_POLL_S = 0.02  # wall seconds between checks that a stalled client has hung up


def _tagged(body: bytes, at: int, tag: str) -> bytes:
    """`body` with `tag` written over its bytes from `at` (same length)."""
    raw = tag.encode("ascii")[: max(0, len(body) - at)]
    return body[:at] + raw + body[at + len(raw):]


def mp3_bytes(size: int, tag: str = "") -> bytes:
    """Whole silent MPEG frames, at least one, about `size` bytes; `tag` (a recording sid) is
    written into the first frame's payload."""
    return _tagged(MP3_FRAME * max(1, size // len(MP3_FRAME)), 4, tag)


def wav_bytes(size: int, tag: str = "") -> bytes:
    """A PCM WAV (8 kHz, 16-bit mono, silence) of about `size` bytes; `tag` starts its samples."""
    data = max(2, size - 44) & ~1
    header = (b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
              + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + data.to_bytes(4, "little"))
    return _tagged(header + bytes(data), 44, tag)


def recording_body(recording_sid: str, ext: str, size: int) -> bytes:
    """The audio the stand-in serves for one recording at one URL shape."""
    return mp3_bytes(size, recording_sid) if ext == ".mp3" else wav_bytes(size, recording_sid)


@dataclass
class StubSettings:
    size_bytes: int = 64_000
    latency_s: float = 0.0
    latency_sigma: float = 0.0  # > 0: each download waits latency_s x lognormal(0, sigma), as the model draws it
    bandwidth_bps: float = 0.0  # 0: as fast as the socket takes it
    error_rate: float = 0.0
    truncate_rate: float = 0.0
    time_scale: float = 1.0
    missing: list[str] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    doomed: list[str] = field(default_factory=list)
    stall_s: float = 600.0
    slow_s: float = 30.0
    seed: int = 0

    def update(self, changes: dict) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(known)}")
            current = getattr(self, name)
            if isinstance(current, dict):
                value = {str(k): list(v) for k, v in dict(value).items()}
            setattr(self, name, list(value) if isinstance(current, list) else
                    value if isinstance(current, dict) else type(current)(value))
        planned = {m for modes in self.plans.values() for m in modes}
        unknown = sorted((set(self.script) | planned) - set(SCRIPT_MODES))
        if unknown:
            raise ValueError(f"unknown script mode(s) {', '.join(unknown)}; known: {', '.join(SCRIPT_MODES)}")
        if not (0 <= self.error_rate <= 1 and 0 <= self.truncate_rate <= 1):
            raise ValueError("error_rate and truncate_rate are probabilities in [0, 1]")
        if self.time_scale <= 0 or self.size_bytes < 1 or min(self.latency_s, self.latency_sigma, self.bandwidth_bps,
                                                                 self.stall_s, self.slow_s) < 0:
            raise ValueError("time_scale and size_bytes must be positive; latency, bandwidth, stall not negative")

    def next_mode(self, recording_sid: str) -> str | None:
        """The fault for this fetch of `recording_sid`: doomed, then its plan, then the script
        (None: none; the rates decide). Callers hold the lock."""
        if recording_sid in self.doomed:
            return "503"
        plan = self.plans.get(recording_sid)
        if plan:
            return plan.pop(0)
        return self.script.pop(0) if self.script else None


class Ledger:
    def __init__(self):
        self._lock = threading.Lock()
        self.recordings: dict[str, dict[str, int]] = {}

    def add(self, sid: str, key: str, n: int = 1) -> None:
        with self._lock:
            entry = self.recordings.setdefault(sid, {"requests": 0, "completed": 0, "bytes": 0, "sending": 0,
                                                     "partial": 0})
            entry[key] += n

    def snapshot(self) -> dict:
        with self._lock:
            return {"recordings": {k: dict(v) for k, v in self.recordings.items()}}


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, settings: StubSettings, history: HistoryWriter | None = None):
        super().__init__(address, Handler)
        self.settings, self.ledger = settings, Ledger()
        self.history = history or HistoryWriter(None, "media")
        self.fetches: dict[str, int] = {}
        self.rng = random.Random(settings.seed)
        self.rng_lock = threading.Lock()

    def draw(self) -> float:
        with self.rng_lock:
            return self.rng.random()

    def latency(self) -> float:
        """Policy seconds before the first byte of one download."""
        s = self.settings
        if not s.latency_sigma:
            return s.latency_s
        with self.rng_lock:
            return s.latency_s * math.exp(s.latency_sigma * self.rng.gauss(0.0, 1.0))

    def scripted(self, recording_sid: str) -> tuple[str | None, int]:
        """(the fault planned for this fetch, its number among the recording's fetches)."""
        with self.rng_lock:
            self.fetches[recording_sid] = n = self.fetches.get(recording_sid, 0) + 1
            return self.settings.next_mode(recording_sid), n


class Handler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:  # quiet: the ledger is the record
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        s = self.server.settings
        if self.path == "/_ledger":
            return self._json(200, self.server.ledger.snapshot())
        if self.path == "/_config":
            return self._json(200, asdict(s))
        m = PATH.match(self.path.split("?", 1)[0])
        if not m:
            return self._json(404, {"code": 20404, "message": "not found"})
        account, sid, ext = m.group(1), m.group(2), m.group(3) or ".wav"
        if ext == ".json":
            return self._json(200, {"sid": sid, "account_sid": account, "status": "completed",
                                    "uri": f"/2010-04-01/Accounts/{account}/Recordings/{sid}.json"})
        self.server.ledger.add(sid, "requests")
        mode, n = self.server.scripted(sid)
        history = self.server.history
        history.emit("download.start", job_id=None, call_sid=None, recording_sid=sid, fetch=n, url_ext=ext)
        self.last_sent = time.time()
        outcome = self._serve_audio(sid, ext, mode, s)
        history.emit("download.end", job_id=None, call_sid=None, recording_sid=sid, skipped=False, fetch=n,
                     quiet_since=round((self.last_sent - history.epoch) / history.time_scale, 6), **outcome)

    def _serve_audio(self, sid: str, ext: str, mode: str | None, s: StubSettings) -> dict:
        """Answer one audio fetch as `mode` (or the rates) say; returns how it ended: ok, bytes,
        status, the fault served (None for a clean answer) and the sha256 of a complete body.
        `last_sent` is kept at the wall time of the last byte sent: a client that hangs up on a
        silent stand-in gave up somewhere between then and the fetch's recorded end (its
        `quiet_since`), which is all the outside can know of when it gave up."""
        if mode == "timeout":  # no answer at all until the client gives up
            self.close_connection = True
            self._idle_until_closed(s.stall_s * s.time_scale)
            return {"ok": False, "bytes": 0, "status": None, "fault": "timeout", "sha256": None}
        if s.latency_s and self._idle_until_closed(self.server.latency() * s.time_scale):
            self.close_connection = True  # it gave up waiting for the first byte: nothing is sent
            return {"ok": False, "bytes": 0, "status": None, "fault": "gave_up", "sha256": None}
        if sid in s.missing:
            self._json(404, {"code": 20404, "message": "recording not available yet"})
            self.last_sent = time.time()
            return {"ok": False, "bytes": 0, "status": 404, "fault": "missing", "sha256": None}
        if mode in ERROR_MODES or (mode is None and self.server.draw() < s.error_rate):
            status = int(mode or 503)
            self._json(status, {"code": 20000 + status, "message": "service unavailable"})
            self.last_sent = time.time()
            return {"ok": False, "bytes": 0, "status": status, "fault": str(status), "sha256": None}
        body = recording_body(sid, ext, s.size_bytes)
        if mode is None and self.server.draw() < s.truncate_rate:
            mode = "truncate"
        short = mode in ("truncate", "stall")
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg" if ext == ".mp3" else "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        ledger = self.server.ledger
        ledger.add(sid, "sending")
        pace = s.slow_s * s.time_scale / len(body) if mode == "slow" else None
        try:
            sent = self._send_body(body[: len(body) // 2] if short else body, s, pace)
            if mode == "stall":
                self.wfile.flush()
                self._idle_until_closed(s.stall_s * s.time_scale)
        finally:
            ledger.add(sid, "sending", -1)
        fault = mode if mode not in (None, "ok") else None
        if short or sent < len(body):
            self.close_connection = True
            ledger.add(sid, "partial")
            return {"ok": False, "bytes": sent, "status": 200, "fault": fault or "cut", "sha256": None}
        ledger.add(sid, "completed")
        ledger.add(sid, "bytes", sent)
        return {"ok": True, "bytes": sent, "status": 200, "fault": fault, "sha256": hashlib.sha256(body).hexdigest()}

    def _idle_until_closed(self, wall_s: float) -> bool:
        """Say nothing for `wall_s`, or until the client hangs up (its timeout fired), so the
        fetch's end is recorded when the client gave up on it; True when it hung up."""
        deadline = time.monotonic() + wall_s
        conn = self.connection
        while time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], min(CLOSED_POLL_S, max(0.0, deadline - time.monotonic())))
            if readable:
                try:
                    if conn.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
                time.sleep(CLOSED_POLL_S)  # it sent something (a pipelined request): not a hang-up
        return False

    def _send_body(self, body: bytes, s: StubSettings, seconds_per_byte: float | None = None) -> int:
        chunk = 16 * 1024 if seconds_per_byte is None else 1024
        sent = 0
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                if seconds_per_byte is not None:
                    time.sleep(len(piece) * seconds_per_byte)
                elif s.bandwidth_bps:  # pace first: the ledger counts a transfer done with its last byte
                    time.sleep(len(piece) / s.bandwidth_bps * s.time_scale)
                self.wfile.write(piece)
                sent += len(piece)
                self.last_sent = time.time()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def do_POST(self) -> None:
        if self.path != "/_config":
            return self._json(404, {"message": "not found"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
            self.server.settings.update(json.loads(self.rfile.read(length) or b"{}"))
        except (ValueError, TypeError) as exc:
            return self._json(400, {"message": str(exc)})
        return self._json(200, asdict(self.server.settings))


def serve(host: str, port: int, settings: StubSettings, history: HistoryWriter | None = None) -> StubServer:
    """Bind (port 0 picks a free one) and return the server; call serve_forever() on it.
    `history`: where each audio fetch is recorded (default: nowhere)."""
    return StubServer((host, port), settings, history)
