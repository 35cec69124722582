"""Is the Redis a command was given there? One PING before anything starts.

Without it `loopfix loadtest --redis-url redis://127.0.0.1:1` started the whole stack, waited
32 s and said "app not ready after 30 s" without naming Redis, and `loopfix worker` ended in
a traceback. Now both say, within 5 s, "cannot reach Redis at URL: why" and exit 2.
"""
from __future__ import annotations

from loopfix.exits import BadInput

PING_TIMEOUT_S = 5.0


def require_redis(url: str, timeout_s: float = PING_TIMEOUT_S) -> None:
    """One PING to `url` with a `timeout_s` connect and read timeout and no retries; BadInput
    naming the URL (without its password) when it does not answer."""
    import redis

    shown = _without_password(url)
    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=None)
    except ValueError as exc:  # not a redis:// rediss:// or unix:// URL
        raise BadInput(f"bad Redis URL {shown}: {exc}") from None
    try:
        conn.ping()
    except redis.RedisError as exc:
        raise BadInput(f"cannot reach Redis at {shown}: {exc}") from None
    except OSError as exc:
        raise BadInput(f"cannot reach Redis at {shown}: {exc.strerror or exc}") from None
    finally:
        conn.close()


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
