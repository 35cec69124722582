"""A Twilio stand-in: serves recordings at Twilio's path, slowly or badly on demand, and keeps a
ledger of downloads per recording that tests and checkers read over HTTP.

- GET /2010-04-01/Accounts/<AC>/Recordings/<RE>[.mp3|.wav|.json] → playable audio (silent MPEG
  frames or PCM WAV) of `size_bytes`, or the recording's JSON metadata; after `latency_s`, at
  `bandwidth_bps` (`latency_sigma` > 0: a lognormal latency around `latency_s`); a 503 with probability `error_rate`; a body cut short with probability
  `truncate_rate`; 404 while the recording is listed in `missing`.
- `script`: faults for the next audio requests, one each, in order (then back to the rates):
  "503" / "500" / "429" (an error answer; a list of them is a 5xx burst), "truncate" (headers
  promise the whole body, half is sent, the connection closes), "stall" (half the body, then
  silence for `stall_s`: the client's read timeout fires), "ok".
- GET /_ledger → {"recordings": {RE: {"requests": n, "completed": n, "bytes": n, "sending": n,
  "partial": n}}}: `sending` transfers under way now, `partial` transfers that ended short.
- GET /_config, POST /_config (JSON, any subset of the settings) → change behaviour mid-run.

Durations are policy seconds, multiplied by `time_scale` like everything else in loopfix.
"""
from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Recordings/(RE[0-9a-fA-F]{32})(\.mp3|\.wav|\.json)?$")
SCRIPT_MODES = ("ok", "429", "500", "503", "truncate", "stall")
MP3_FRAME = b"\xff\xfb\x90\x00" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, silent: 26 ms


def mp3_bytes(size: int) -> bytes:
    """Whole silent MPEG frames, at least one, about `size` bytes."""
    return MP3_FRAME * max(1, size // len(MP3_FRAME))


def wav_bytes(size: int) -> bytes:
    """A PCM WAV (8 kHz, 16-bit mono, silence) of about `size` bytes."""
    data = max(2, size - 44) & ~1
    header = (b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
              + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + data.to_bytes(4, "little"))
    return header + bytes(data)


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
    stall_s: float = 600.0
    seed: int = 0

    def update(self, changes: dict) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(known)}")
            current = getattr(self, name)
            setattr(self, name, list(value) if isinstance(current, list) else type(current)(value))
        unknown = sorted(set(self.script) - set(SCRIPT_MODES))
        if unknown:
            raise ValueError(f"unknown script mode(s) {', '.join(unknown)}; known: {', '.join(SCRIPT_MODES)}")
        if not (0 <= self.error_rate <= 1 and 0 <= self.truncate_rate <= 1):
            raise ValueError("error_rate and truncate_rate are probabilities in [0, 1]")
        if self.time_scale <= 0 or self.size_bytes < 1 or min(self.latency_s, self.latency_sigma, self.bandwidth_bps,
                                                                 self.stall_s) < 0:
            raise ValueError("time_scale and size_bytes must be positive; latency, bandwidth, stall not negative")

    def next_mode(self) -> str | None:
        """Pop the scripted fault for this request (None: none scripted). Callers hold the lock."""
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

    def __init__(self, address, settings: StubSettings):
        super().__init__(address, Handler)
        self.settings, self.ledger = settings, Ledger()
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

    def scripted(self) -> str | None:
        with self.rng_lock:
            return self.settings.next_mode()


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
        mode = self.server.scripted()
        if s.latency_s:
            time.sleep(self.server.latency() * s.time_scale)
        if sid in s.missing:
            return self._json(404, {"code": 20404, "message": "recording not available yet"})
        if mode in ("429", "500", "503") or (mode is None and self.server.draw() < s.error_rate):
            status = int(mode or 503)
            return self._json(status, {"code": 20000 + status, "message": "service unavailable"})
        body = mp3_bytes(s.size_bytes) if ext == ".mp3" else wav_bytes(s.size_bytes)
        if mode is None and self.server.draw() < s.truncate_rate:
            mode = "truncate"
        short = mode in ("truncate", "stall")
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg" if ext == ".mp3" else "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        ledger = self.server.ledger
        ledger.add(sid, "sending")
        try:
            sent = self._send_body(body[: len(body) // 2] if short else body, s)
            if mode == "stall":
                self.wfile.flush()
                time.sleep(s.stall_s * s.time_scale)
        finally:
            ledger.add(sid, "sending", -1)
        if short or sent < len(body):
            self.close_connection = True
            ledger.add(sid, "partial")
            return
        ledger.add(sid, "completed")
        ledger.add(sid, "bytes", sent)

    def _send_body(self, body: bytes, s: StubSettings) -> int:
        chunk = 16 * 1024
        sent = 0
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                if s.bandwidth_bps:  # pace first: the ledger counts a transfer done with its last byte
                    time.sleep(len(piece) / s.bandwidth_bps * s.time_scale)
                self.wfile.write(piece)
                sent += len(piece)
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


def serve(host: str, port: int, settings: StubSettings) -> StubServer:
    """Bind (port 0 picks a free one) and return the server; call serve_forever() on it."""
    return StubServer((host, port), settings)
