"""Enqueueing a recording job (seeds 001, 003, 004): statuses, the dedup window, `retry=` as an int,
whether a play click is deduplicated, and what a Twilio recording callback stores and enqueues.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from loopfix.reference_app.policy.core import Policy


ENQUEUE_REASON_STATUS = {"enqueued": 202, "cached": 200, "duplicate": 200, "error": 500}


def enqueue_status(reason: str) -> int:
    """Seed 001's tuple reason → HTTP status: an enqueue error is a 500, never a 200."""
    return ENQUEUE_REASON_STATUS[reason]


def reported_enqueue_reason(reason: str, p: Policy) -> str:
    """The reason the enqueue reports: before (enqueue_error_hidden) a failed enqueue returns
    False like a dedup hit, so the caller reports 'duplicate' (001)."""
    return "duplicate" if reason == "error" and p.has("enqueue_error_hidden") else reason


def enqueue_dedup_ttl(p: Policy) -> float:
    return p.before_enqueue_dedup_ttl_s if p.has("long_dedup_ttl") else p.enqueue_dedup_ttl_s


def enqueue_retry_is_int(via: str, p: Policy) -> bool:
    """Does an enqueue made `via` this path pass `retry=3` as an int, so RQ raises (001)?

    Only the enqueue API's (`via == "enqueue_api"`, seed 001's routes_calls endpoints): that is
    where seed 001's loop lived (a failed enqueue answered 200 'duplicate' forever). The webhook,
    playback and retry paths are taken to predate the `retry=` argument, so that in `before`
    seed 000's immediate-retry loop and seed 003's job-per-click loop still run instead of every
    job failing at enqueue.
    """
    return via == "enqueue_api" and p.has("retry_as_int")


def playback_dedups(p: Policy) -> bool:
    """Does a play click pass the playback mark and the enqueue dedup before it enqueues?

    before (enqueue_every_click): neither — the play route predates PlaybackDedup (003) and
    enqueued on every click, so repeated clicks give duplicate jobs.
    """
    return not p.has("enqueue_every_click")



def normalise_recording_url(url: str, p: Policy) -> str:
    """Twilio's RecordingUrl → the audio URL to store (001).

    fixed: a `.json` *suffix* of the path becomes `.mp3`; an extension-less recording URL gets
    `.mp3`; anything else is unchanged (query and fragment kept). seed: `.replace` everywhere;
    before: stored as sent.
    """
    if p.has("json_recording_url"):
        return url
    if p.has("json_replace_everywhere"):
        return url.replace(".json", ".mp3") if url.endswith(".json") else url
    parts = urlsplit(url)
    path = parts.path
    last = path.rsplit("/", 1)[-1]
    if last.endswith(".json"):
        path = path[: -len(".json")] + ".mp3"
    elif last and "." not in last:
        path = path + ".mp3"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def recording_callback_enqueues(recording_known: bool, p: Policy) -> bool:
    """Does a completed-recording callback enqueue a run? Not when its RecordingSid already has
    a run or a file (fixed): Twilio signs no timestamp, so a replay — or Twilio's own retry — is
    a valid callback, and must be idempotent. `webhook_replay_enqueues`: only the enqueue dedup
    window stands between a late replay and a second run."""
    return not recording_known or p.has("webhook_replay_enqueues")
