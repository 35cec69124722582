"""The history's event schema: one record function for the model, the live app and the checkers.

One schema for a history whether it came from the SimPy model (`source: "sim"`), from a live
run (`source: "live"`) or from outside a service under test (`source: "target"`): a list of
flat records, each with `t` (policy seconds), `kind`, `source`, `proc` (which process wrote
it) and the fields listed for its kind below. Records are plain dicts so that checkers stay
pure functions over data.

It lives in the policy core because that is the one package harness/, sim/ and reference_app/
all import already (DESIGN: harness imports only the policy core), and like the rules it needs
nothing but the standard library. Writing records to files is `reference_app/events.py`
(`HistoryWriter`); reading and merging them is `harness/history.py`.

Ids: `job_id` is the correlation id everywhere (the RecordingRun / BackgroundJob row key as a
string); `call_sid`, `recording_sid`, `business_id`, `lead_id` are the domain ids; `client`
names one simulated or Locust user and `session` one playback session of it.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping

# kind -> fields it carries besides t/kind/source/proc (documentation and validation).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # browser players, click-stormers, refreshers
    "client.start": ("client", "session", "call_sid", "role"),
    "client.request": ("client", "session", "call_sid", "status", "retry_after", "n", "audio_ok"),
    "client.end": ("client", "session", "call_sid", "outcome", "requests"),
    # recording jobs (job_type full | download_only; via webhook | playback | enqueue_api | retry | defer | requeue)
    "job.enqueue": ("job_id", "call_sid", "job_type", "via"),
    "job.start": ("job_id", "call_sid", "attempt", "worker"),
    "job.retry": ("job_id", "call_sid", "attempt", "delay", "phase"),  # phase: the budget spent, calllog | fetch
    "job.end": ("job_id", "call_sid", "outcome"),  # done | retry | failed | deferred | crashed | skipped
    "job.stuck": ("job_id", "call_sid", "reason"),
    "enqueue.result": ("call_sid", "reason", "status"),  # enqueued | cached | duplicate | error
    "fail_fast.trip": ("call_sid", "count"),
    # downloads (ok: bytes written and renamed into place; skipped: already complete)
    "download.start": ("job_id", "call_sid", "recording_sid"),
    "download.end": ("job_id", "call_sid", "recording_sid", "ok", "skipped", "bytes"),
    # per-business download semaphore
    "slot.acquire": ("job_id", "business_id", "ok"),
    "slot.release": ("job_id", "business_id", "freed"),
    "worker.sleep": ("job_id", "seconds", "reason"),
    # BulkGate lock and lead deletion
    "lock.acquire": ("business_id", "op", "owner", "ok"),
    "lock.refresh": ("business_id", "op", "owner", "ok"),
    "lock.release": ("business_id", "op", "owner", "freed", "holder"),
    "lead_job.request": ("business_id", "job_id", "existing", "client"),
    "lead_job.start": ("business_id", "job_id"),
    "lead_job.pause": ("business_id", "job_id", "processed"),
    "lead_job.end": ("business_id", "job_id", "status", "processed"),
    "lead.delete": ("business_id", "lead_id", "job_id"),
    "lead.requested": ("business_id", "lead_id", "job_id"),
    # environment
    "recording.created": ("call_sid", "recording_sid", "business_id", "has_url"),
    # target mode, observed from outside the service (source "target"): each Twilio callback
    # sent (hook call_status | recording) and its answer; a delete job's state as the service
    # reported it; a business's lead ids as listed before (phase start) and after (end) the run
    "webhook.send": ("hook", "call_sid", "recording_sid", "business_id", "signed", "status"),
    "lead_job.observe": ("business_id", "job_id", "state"),
    "leads.listed": ("business_id", "lead_ids", "phase"),
    # how: stop | crash | redis_pause | redis_restart | degrade; workers: how many workers the
    # window takes down, 0 = every one (then nothing promotes due retries: the ticker is theirs)
    "outage.start": ("target", "how", "workers"),
    "outage.end": ("target", "how", "workers"),
}


def event(kind: str, t: float, source: str, proc: str, **fields: Any) -> dict[str, Any]:
    """One history record. Unknown kinds raise KeyError so typos fail loudly."""
    if kind not in EVENT_FIELDS:
        raise KeyError(f"unknown event kind {kind!r}")
    return {"t": round(t, 6), "kind": kind, "source": source, "proc": proc, **fields}


def dumps(record: dict[str, Any]) -> str:
    """Canonical JSON for one record: sorted keys, no spaces (byte-identical across runs)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def define(source: str, space: dict[str, Any], what: str) -> None:
    """Run generated `source` (functions over the record schema: readers, recorders, handlers,
    dispatchers) in `space`, compiled first. Not `exec(source)`: exec of a string runs through
    CPython's PyRun_String, which marks a KeyboardInterrupt raised there (Ctrl-C landing while
    a run builds its code) as unhandled, and the interpreter then dies by SIGINT at exit even
    though `loopfix` caught it and exited 130."""
    exec(compile(source, f"<loopfix generated {what}>", "exec"), space)


_FROM_RECORD = '''
def handler(e):
    step({arguments})
'''


def from_record(step: Callable[..., None]) -> Callable[[Mapping[str, Any]], None]:
    """A consumer's handler of one kind's records (harness.stream's protocol) from its `step`,
    here where the consumers of every layer can reach it (reports.measures.Scan,
    sim.metrics.HistoryMetrics): a function of one record calling `step` with the record's
    fields that `step`'s parameters name, in their order (`e[name]`; `e.get(name, default)`
    where it has a default; a parameter named `record` is given the record itself, e.g. to keep
    it as a witness); `handler.step` is `step`, for a caller that has the fields without a
    record to read them from (sim.records' recorders, harness.stream's dispatchers)."""
    space: dict[str, Any] = {"step": step}
    arguments = []
    for p in inspect.signature(step).parameters.values():
        if p.name == "record":
            arguments.append("e")
        elif p.default is p.empty:
            arguments.append(f"e[{p.name!r}]")
        else:
            space[f"default_{p.name}"] = p.default
            arguments.append(f"e.get({p.name!r}, default_{p.name})")
    define(_FROM_RECORD.format(arguments=", ".join(arguments)), space, "handler")
    handler = space.pop("handler")  # its globals are `space`: no cycle keeping `step` alive
    handler.step = step
    return handler
