"""The embedded Redis fallback: fakeredis's TCP server, run as its own process
(`python -m loopfix.loadtests.fake_redis --port N`), for a stack with no REDIS_URL and no redis-server
on PATH.

Two things a real `rq worker` needs from it that fakeredis's TcpFakeServer does not give:

- TCP_NODELAY on every accepted connection. The server writes a reply in pieces; with Nagle's
  algorithm on, a client that pipelines (RQ does, for every job) waits for the delayed ACK,
  ~40 ms per round trip, and the worker crawls.
- an INFO answer. fakeredis has no INFO command; here it answers the sections clients read
  (server: redis_version, uptime; clients; memory; persistence; keyspace) with plain figures.
- a CLIENT INFO that redis-py can parse (RQ's worker reads its own address from it).

Lua scripts (the app's atomic claims in reference_app/coordination.py) need `lupa`
(fakeredis[lua]). Keys live in this process's memory: killing it loses everything, as a
restart of a redis-server with nothing on disk does.
"""
from __future__ import annotations

import argparse
import socket
import time

from fakeredis import TcpFakeServer
from fakeredis._commands import command
from fakeredis.commands_mixins.server_mixin import ServerCommandsMixin

STARTED = time.time()


def info_text(section: str, keys: int) -> bytes:
    """INFO's reply: `# Section` headers and `field:value` lines, as Redis writes them."""
    uptime = int(time.time() - STARTED)
    sections = {
        "server": [("redis_version", "7.2.0"), ("redis_mode", "standalone"), ("os", "fakeredis"),
                   ("uptime_in_seconds", uptime), ("uptime_in_days", uptime // 86400)],
        "clients": [("connected_clients", 1), ("blocked_clients", 0)],
        "memory": [("used_memory", 0), ("used_memory_human", "0B"), ("maxmemory", 0)],
        "persistence": [("loading", 0), ("rdb_changes_since_last_save", 0), ("aof_enabled", 0)],
        "keyspace": [("db0", f"keys={keys},expires=0,avg_ttl=0")] if keys else [],
    }
    wanted = [section.lower()] if section and section.lower() in sections else list(sections)
    lines: list[str] = []
    for name in wanted:
        lines.append(f"# {name.capitalize()}")
        lines += [f"{k}:{v}" for k, v in sections[name]]
        lines.append("")
    return "\r\n".join(lines).encode()


@command((), (bytes,))
def info(self, *sections: bytes) -> bytes:
    return info_text(sections[0].decode() if sections else "", len(self._db))


def _client_field(value) -> str:
    if isinstance(value, (tuple, list)) and len(value) == 2:  # a socket address: ip:port, as Redis writes it
        return f"{value[0]}:{value[1]}"
    return str(value).replace(" ", "_")


@command((), (), name="CLIENT INFO")
def client_info_resp(self) -> bytes:
    return " ".join(f"{k}={_client_field(v)}" for k, v in self._client_info.items()).encode()


# fakeredis looks a command's method up by name on its socket's class: INFO is new, and CLIENT
# INFO replaces fakeredis's own, which writes the TCP server's (ip, port) tuples with a space
# inside (redis-py's parser, and so RQ's worker start-up, chokes on it).
ServerCommandsMixin.info = info
ServerCommandsMixin.client_info_resp = client_info_resp


class NoDelayFakeServer(TcpFakeServer):
    """TcpFakeServer with TCP_NODELAY on each client connection."""

    def get_request(self):
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = NoDelayFakeServer((args.host, args.port))
    print(f"fakeredis listening on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
