"""Which answer a GET or HEAD of a stored recording gets, from its request headers: RFC 9110's
conditional requests (§13: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since,
If-Range) evaluated in the order §13.2.2 prescribes, then the Range header (byte_ranges). Pure.

A player asks again for a recording it already has with `If-None-Match` and gets a 304 with no
body; a player resuming a download asks `Range` with `If-Range`, and gets the rest (206) only
while the file is the one it started on — else the whole file (200). The recording routes build
the response (and its sendfile or proxy hand-off) from the `Selected` this returns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable

from loopfix.reference_app.byte_ranges import Unsatisfiable, requested_range

CONDITIONAL_HEADERS = ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since", "Range", "If-Range")
_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


@dataclass(frozen=True)
class Representation:
    """What the conditions are evaluated against: the file's length, its strong entity-tag
    (quoted, `"…"`) and its modification time (whole epoch seconds, as HTTP-dates carry)."""

    length: int
    etag: str
    last_modified: int


@dataclass(frozen=True)
class Selected:
    """The answer: `status` 200 (all of it), 206 (bytes `first`..`last`, inclusive), 304 (not
    modified), 412 (a precondition failed) or 416 (no satisfiable range)."""

    status: int
    first: int = 0
    last: int = -1

    @property
    def length(self) -> int:
        """Bytes of body to send."""
        return self.last - self.first + 1 if self.status in (200, 206) else 0


def http_date_seconds(value: str | None) -> int | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as epoch seconds; None if absent or not a
    date (an invalid date makes its condition ignored, §13.1.3-4)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # asctime carries no zone; HTTP-dates are all GMT
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """An `If-Match`/`If-None-Match` list as [(weak, opaque-tag)], `[]` for `*`'s "any", None
    when the value is not a list of entity-tags (the condition is then false for If-Match, and
    for If-None-Match no tag matches)."""
    value = value.strip()
    if value == "*":
        return []
    tags, pos = [], 0
    while pos < len(value):
        m = _ENTITY_TAG.match(value, pos)
        if m is None or m.end() == pos:
            return None
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return tags or None


def _strong_match(value: str, etag: str) -> bool:
    """If-Match: true for `*` or a strong tag equal to ours (§13.1.1, strong comparison)."""
    tags = entity_tags(value)
    return tags is not None and (tags == [] or any(not weak and tag == etag for weak, tag in tags))


def _weak_match(value: str, etag: str) -> bool:
    """If-None-Match matches: `*`, or any tag equal to ours ignoring W/ (§13.1.2, weak comparison)."""
    tags = entity_tags(value)
    return tags is not None and (tags == [] or any(tag == etag for _weak, tag in tags))


def _if_range_holds(value: str, rep: Representation) -> bool:
    """§13.1.5: an entity-tag must match strongly; a date must equal Last-Modified exactly."""
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == rep.etag  # a weak tag never matches in a strong comparison
    return http_date_seconds(value) == rep.last_modified


def select(method: str, header: Callable[[str], str | None], rep: Representation) -> Selected:
    """The answer to `method` (GET or HEAD) with request headers read through `header(name)`
    (`name` one of CONDITIONAL_HEADERS)."""
    if_match = header("If-Match")
    if if_match is not None:
        if not _strong_match(if_match, rep.etag):
            return Selected(412)
    else:
        since = http_date_seconds(header("If-Unmodified-Since"))
        if since is not None and rep.last_modified > since:
            return Selected(412)
    if_none_match = header("If-None-Match")
    if if_none_match is not None:
        if _weak_match(if_none_match, rep.etag):
            return Selected(304)
    else:
        since = http_date_seconds(header("If-Modified-Since"))
        if since is not None and rep.last_modified <= since:
            return Selected(304)
    whole = Selected(200, 0, rep.length - 1)
    range_header = header("Range")
    if method != "GET" or not range_header:  # Range means something for GET only (§14.2)
        return whole
    if_range = header("If-Range")
    if if_range is not None and not _if_range_holds(if_range, rep):
        return whole
    try:
        wanted = requested_range(range_header, rep.length)
    except Unsatisfiable:
        return Selected(416)
    return whole if wanted is None else Selected(206, *wanted)
