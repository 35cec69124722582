"""The `Range` request header read as RFC 9110 (§14.1.2, §14.2) means it, pure.

What a fuzzer finds at once in a server that reads it loosely (werkzeug's own parser did all
of these): a suffix longer than the file (`bytes=-2000` of 1,024 bytes) must give the whole
file, not 416; a range unit it does not understand (`items=0-9`) MUST be ignored, not answered
416; empty list elements (`bytes=0-9,`) are to be skipped. `requested_range` gives one
`first-last` range to send (206), None to ignore the header (200), or raises `Unsatisfiable`
(416). Multiple ranges are ignored (the RFC lets a server ignore Range; no player asks for
multipart/byteranges) unless none of them is satisfiable, which is a 416. conditional.select
applies it after the preconditions (If-Range among them).
"""
from __future__ import annotations

import re

OWS = " \t"
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")
_DIGITS_MAX = 18  # longer numbers compare as "larger than any file", without int() on them


class Unsatisfiable(ValueError):
    """No range of a bytes Range header can be sent: answered 416 with `Content-Range: bytes */len`."""


class InvalidRange(Unsatisfiable):
    """A bytes Range whose syntax is not RFC 9110's: answered 416 (rejected as invalid)."""


def _number(digits: str) -> int | None:
    """The value, or None for a number too long to be a byte position of any file."""
    digits = digits.lstrip("0") or "0"
    return None if len(digits) > _DIGITS_MAX else int(digits)


def satisfiable_ranges(header: str, length: int) -> tuple[int, list[tuple[int, int]]] | None:
    """(how many ranges the header asks for, the satisfiable ones as (first, last)) for a
    representation of `length` bytes; None when the header is to be ignored (another unit).
    Raises InvalidRange on bytes ranges with invalid syntax."""
    unit, eq, range_set = header.partition("=")
    if not eq or unit.strip(OWS).lower() != "bytes":
        return None
    specs = [spec.strip(OWS) for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # empty list elements are skipped (§5.6.1.2)
    if not specs:
        raise InvalidRange("no range in the range set")
    out: list[tuple[int, int]] = []
    for spec in specs:
        if m := _INT_RANGE.fullmatch(spec):
            first = _number(m.group(1))  # None: past the end of any file
            last = _number(m.group(2)) if m.group(2) else None
            if m.group(2) and last is not None and (first is None or last < first):
                raise InvalidRange(f"last-pos before first-pos in {spec!r}")
            if first is not None and first < length:
                out.append((first, length - 1 if last is None else min(last, length - 1)))
        elif m := _SUFFIX_RANGE.fullmatch(spec):
            suffix = _number(m.group(1))  # None: longer than any file, so all of it
            if suffix != 0 and length > 0:
                out.append((0 if suffix is None else max(0, length - suffix), length - 1))
        else:
            raise InvalidRange(f"not a byte range: {spec[:40]!r}")
    return len(specs), out


def requested_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The one range of `header` to send, as (first, last) inclusive, for a representation of
    `length` bytes; None to ignore the header (absent, another unit, several ranges of which
    some are satisfiable: the whole file). Raises Unsatisfiable (InvalidRange for bad syntax)."""
    if not header:
        return None
    parsed = satisfiable_ranges(header, length)
    if parsed is None:
        return None
    asked, ranges = parsed
    if not ranges:
        raise Unsatisfiable(f"no range of {header[:40]!r} within {length} bytes")
    if asked > 1:
        return None
    return ranges[0]
