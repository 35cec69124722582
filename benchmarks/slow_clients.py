"""The app under slow and oversized clients: how long `/healthz` and a playback poll take while
N connections each hold half a request line open (slowloris, a phone on a dying network), and
how long a 50 MB request body takes to be refused.

Half-open connections are opened from this process and kept open: one the server closes (the
gevent worker drops a request that has not arrived whole within its keep-alive timeout) is
opened again at once, so N stay held for the whole measurement; the reopenings are counted.
Latencies are wall times of single requests on fresh connections (urllib-free: a raw socket
and one `recv` loop, so the client adds next to nothing), measured idle first: the baseline.
"""
from __future__ import annotations

import socket
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HALF_REQUEST = b"GET /healthz HT"  # half a request line, never finished
BIG_BODY_BYTES = 50_000_000


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or 80


def request_status(url: str, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0,
                   method: str = "GET", body: bytes = b"") -> tuple[int | None, float]:
    """(status, wall seconds) of one HTTP/1.1 request on a new connection; status None when no
    status line arrived within `timeout`."""
    start = time.perf_counter()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    try:
        with socket.create_connection(_address(url), timeout=timeout) as s:
            s.settimeout(max(0.001, timeout - (time.perf_counter() - start)))
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:  # timeout, refused, reset before a status line
        return None, time.perf_counter() - start
    elapsed = time.perf_counter() - start
    try:
        return int(data.split(b" ", 2)[1]), elapsed
    except (IndexError, ValueError):
        return None, elapsed


@dataclass
class HalfOpen:
    """N connections holding half a request line each; `reopened` counts those the server closed
    and this reopened."""

    url: str
    n: int
    reopened: int = 0
    failed: int = 0
    _socks: list = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(_address(self.url), timeout=5)
            s.sendall(HALF_REQUEST)
            s.setblocking(False)
            return s
        except OSError:
            self.failed += 1
            return None

    def _keep(self) -> None:
        while not self._stop.wait(0.05):
            for i, s in enumerate(self._socks):
                if s is not None:
                    try:
                        if s.recv(1, socket.MSG_PEEK) != b"":
                            continue  # the server said something (an error page): keep it open anyway
                    except BlockingIOError:
                        continue  # still open, nothing said: held
                    except OSError:
                        pass
                    s.close()
                self._socks[i] = self._open()
                self.reopened += 1

    @contextmanager
    def held(self):
        self._socks = [self._open() for _ in range(self.n)]
        keeper = threading.Thread(target=self._keep, name="half-open keeper", daemon=True)
        keeper.start()
        try:
            yield self
        finally:
            self._stop.set()
            keeper.join()
            for s in self._socks:
                if s is not None:
                    s.close()


@dataclass(frozen=True)
class Latencies:
    """Wall seconds of `samples` requests; `answered` of them got a status within the timeout."""

    seconds: list[float]
    answered: int

    @property
    def worst(self) -> float:
        return max(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def latencies(url: str, path: str, headers: dict[str, str], expected: int, samples: int,
              timeout: float, pause: float = 0.05) -> Latencies:
    """`samples` requests one after another; a wrong status raises (the measure would be of
    something else)."""
    out, answered = [], 0
    for _ in range(samples):
        status, took = request_status(url, path, headers, timeout)
        if status is not None:
            if status != expected:
                raise RuntimeError(f"{path} answered {status}, expected {expected}")
            answered += 1
        out.append(took)
        time.sleep(pause)
    return Latencies(out, answered)


def under_half_open(url: str, targets: dict[str, tuple[str, dict, int]], n: int, samples: int,
                    timeout: float, min_hold_s: float = 3.0) -> tuple[dict[str, Latencies], dict[str, Latencies], HalfOpen]:
    """Each target's latencies idle, then with `n` half-open connections held for at least
    `min_hold_s` (longer than gunicorn's 2 s keep-alive timeout, so a server that drops them
    has dropped them and the holder has reopened them meanwhile)."""
    idle = {k: latencies(url, p, h, e, samples, timeout) for k, (p, h, e) in targets.items()}
    holder = HalfOpen(url, n)
    with holder.held():
        start = time.perf_counter()
        time.sleep(0.2)  # let the server accept them all
        held = {k: latencies(url, p, h, e, samples, timeout) for k, (p, h, e) in targets.items()}
        while time.perf_counter() - start < min_hold_s:
            for k, (p, h, e) in targets.items():
                more = latencies(url, p, h, e, 1, timeout, pause=0.2)
                held[k] = Latencies(held[k].seconds + more.seconds, held[k].answered + more.answered)
    return idle, held, holder


def oversized_body(url: str, path: str, headers: dict[str, str], timeout: float,
                   declared: int = BIG_BODY_BYTES) -> tuple[int | None, float]:
    """(status, wall seconds) of a POST declaring a `declared`-byte body and sending 16 bytes
    of it: a server that waits for the body (to read or parse it) answers only at `timeout`."""
    return request_status(url, path, {**headers, "Content-Type": "application/json",
                                      "Content-Length": str(declared)}, timeout, "POST", b'{"lead_ids": [1,')


def chunked_body(url: str, path: str, headers: dict[str, str], timeout: float, limit: int = BIG_BODY_BYTES,
                 chunk: int = 64 * 1024) -> tuple[int | None, int, float]:
    """(status, body bytes sent, wall seconds) of a POST whose body is sent chunked, 64 kB at a
    time, until the server answers or `limit` bytes are sent: a server that caps bodies answers
    413 after about the cap (plus what the sockets' buffers held), not after `limit`."""
    import select

    start = time.perf_counter()
    head = [f"POST {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}", "Connection: close",
            "Content-Type: application/json", "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    frame = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
    sent, data = 0, b""
    with socket.create_connection(_address(url), timeout=timeout) as s:
        opening = b'{"lead_ids": [1,'
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
        s.setblocking(False)
        pending = memoryview(b"")
        while b"\r\n" not in data:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                return None, sent, time.perf_counter() - start
            want_write = sent < limit or len(pending) > 0
            readable, writable, _ = select.select([s], [s] if want_write else [], [], left)
            if readable:
                try:
                    got = s.recv(4096)
                except OSError:
                    break
                if not got:
                    break
                data += got
                continue
            if writable:
                if not pending:
                    pending = memoryview(frame)
                try:
                    n = s.send(pending)
                except OSError:  # the server closed after answering: read what it said
                    s.setblocking(True)
                    try:
                        data += s.recv(4096)
                    except OSError:
                        pass
                    break
                pending = pending[n:]
                sent += n
    elapsed = time.perf_counter() - start
    try:
        return int(data.split(b" ", 2)[1]), sent, elapsed
    except (IndexError, ValueError):
        return None, sent, elapsed


def figures(app_urls: dict[str, str], poll_path: str, auth: dict[str, str], cap: int, held: int = 256,
            samples: int = 5, timeout: float = 5.0, progress=lambda label: None) -> list:
    """`/healthz` and a 202 poll with `held` half-open connections held, on the app under each
    worker class of `app_urls` (the first: `loopfix serve`'s, held to the goal); the time to a
    413 for a declared 50 MB body and for a chunked one (body cap `cap`). Baselines: the same
    requests on the idle app, in the same run."""
    from loopfix.benchmarks.figures import Figure

    targets = {"healthz": ("/healthz", {}, 200), "poll 202": (poll_path, auth, 202)}
    out, default = [], next(iter(app_urls))
    for worker_class, url in app_urls.items():
        progress(f"app: {held} half-open connections ({worker_class})")
        n = samples if worker_class == default else 2  # the others may time out every time
        idle, under, holder = under_half_open(url, targets, held, n, timeout)
        for name in targets:
            answered = under[name].answered
            out.append(Figure(
                "app", f"{name} with {held} half-open connections held ({worker_class})", under[name].worst * 1000,
                "ms", baseline=idle[name].worst * 1000,
                baseline_name=f"{name} on the idle app (slowest of {len(idle[name].seconds)})",
                goal="value <= 1000" if worker_class == default else "",
                holds=answered == len(under[name].seconds) or worker_class != default,
                note=f"slowest of {len(under[name].seconds)} requests, {answered} answered within {timeout:g} s "
                     f"(unanswered count as the timeout); median {under[name].median * 1000:.1f} ms; "
                     f"{holder.reopened} half-open connections closed by the server and reopened"))
    progress("app: oversized bodies")
    url = app_urls[default]
    idle = latencies(url, "/healthz", {}, 200, samples, timeout)
    status, took = oversized_body(url, "/api/leads/bulk-delete", auth, timeout)
    out.append(Figure("app", "413 for a declared 50 MB body (16 bytes sent)", took * 1000, "ms",
                      baseline=idle.worst * 1000, baseline_name="healthz on the idle app (slowest)",
                      goal="value <= 1000", holds=status == 413, note=f"answered {status}"))
    status, sent, took = chunked_body(url, "/api/leads/bulk-delete", auth, timeout)
    out.append(Figure("app", "413 for a chunked 50 MB body", took * 1000, "ms", baseline=idle.worst * 1000,
                      baseline_name="healthz on the idle app (slowest)", holds=status == 413,
                      note=f"answered {status} after {sent:,} body bytes were sent (cap {cap:,}; the rest "
                           "sat in socket buffers)"))
    return out
