"""The media-host allowlist (SSRF guard): which URLs the app may fetch recordings from.

Not a seed rule and not variant-dependent, so it lives beside the app that fetches, not in the
policy core: the webhook refuses a RecordingUrl off the list, and the download checks every hop.
Pure: no I/O.
"""
from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit


def media_host_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Is `url` on the allowlist? `host` entries allow https only; `host:port` entries allow
    http or https on exactly that port (local stand-ins). User-info and other schemes refuse,
    and so does any whitespace, control or non-ASCII character: urlsplit silently strips some
    of them where requests/urllib3 parse differently, and a URL two parsers read differently
    is how an allowlist is bypassed."""
    if any(not "\x21" <= c <= "\x7e" for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return False
    host = parts.hostname.lower()
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        name, _, entry_port = entry.partition(":")
        if entry_port:
            if host == name and port == int(entry_port):
                return True
        elif host == name and parts.scheme == "https" and port in (None, 443):
            return True
    return False
