"""Twilio's request signature (X-Twilio-Signature), pure: HMAC-SHA1 over the full URL followed
by every POST parameter name and value, sorted by name, keyed by the account's auth token,
base64-encoded. Used by the webhooks to verify and by the load tests to sign."""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable, Mapping


def signature(auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    items = params.items() if isinstance(params, Mapping) else params
    payload = url + "".join(f"{k}{v}" for k, v in sorted(items, key=lambda kv: (kv[0], kv[1])))
    mac = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str | None) -> bool:
    """Constant-time check of `given` against the expected signature. Compared as bytes: a
    header may carry any latin-1 character, and compare_digest refuses non-ASCII str."""
    if not given:
        return False
    return hmac.compare_digest(signature(auth_token, url, list(params)).encode(), given.encode("utf-8", "replace"))
