"""flows.recording, driven with canned effect results: the slot, the deferral and the retry
steps of the recording job, as the app's RQ job and the model's workers both take them."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import (Coord, Emit, Finish, Park, RetryByRQ, Save, Sleep, drive, drive_with,
                                                 effect_type)
from loopfix.reference_app.flows.recording import defer, retry_later, wait_for_slot
from loopfix.reference_app.policy import make_policy

FIXED = make_policy("fixed")


def test_a_free_slot_is_taken_and_recorded():
    effects, _ = drive_with(recording_job(JOB, FIXED), ["RE1", True, False] + [None] * 4)
    # one effect: the call, then slot.acquire with its answer as the last field (ok)
    assert effects[1] == (Coord, "acquire_slot", (1, "rq7", "CA1"), "slot.acquire", ("7", 1))


def test_fixed_never_waits_for_a_slot_in_the_worker_and_defers_holding_none():
    effects, value = drive_with(recording_job(JOB, FIXED), ["RE1", False] + [None] * 3)
    assert not any(isinstance(e, Sleep) for e in effects) and "deferred" in value
    assert "release_slot" not in kinds(effects)


def test_the_blocking_slot_loop_sleeps_a_second_at_a_time_until_a_slot_frees():
    blocking = make_policy("fixed", "blocking_slot_loop")
    results = [None, None, False, None, None, True]
    effects, ok = drive_with(wait_for_slot("7", 1, "rq7", "CA1", blocking), results)
    assert kinds(effects) == ["worker.sleep", "Sleep", "acquire_slot", "worker.sleep", "Sleep", "acquire_slot"]
    assert ok is True


def test_a_deferral_reparks_the_job_after_the_policys_delay_without_sleeping():
    effects, delay = drive_with(defer("7", "CA1", 2, FIXED), [None, None, None])
    assert delay == FIXED.slot_defer_s[2]
    assert effects == [Save({"defer_count": 3, "status": "queued", "next_attempt_in_s": delay}), Park(delay, "defer"),
                       Emit("job.end", {"job_id": "7", "call_sid": "CA1", "outcome": "deferred"})]


def test_the_seeds_deferral_sleeps_in_the_worker_then_requeues_at_once():
    effects, delay = drive_with(defer("7", "CA1", 0, make_policy("fixed", "slot_defer_sleeps")), [None] * 5)
    assert [effect_type(e) for e in effects] == [Save, Emit, Sleep, Park, Emit]
    assert effects[2] == Sleep(delay) and effects[3] == Park(0.0, "defer")


def test_a_missing_calllog_retries_after_the_backoff_and_records_the_attempt():
    effects, d = drive_with(retry_later("7", "CA1", 1, 0, "calllog", "CallLog not found", FIXED), [None] * 5)
    assert (d.attempt, d.delay_s) == (2, 120.0)
    assert effects[1] == Emit("job.retry", {"job_id": "7", "call_sid": "CA1", "attempt": 2, "delay": 120.0,
                                            "phase": "calllog"})
    assert effects[2:4] == [Save({"status": "retry_wait", "next_attempt_in_s": 120.0}), Park(120.0, "retry")]


def test_a_spent_budget_fails_the_run_for_good():
    effects, d = drive_with(retry_later("7", "CA1", 5, 0, "calllog", "CallLog not found", FIXED), [None])
    assert d.action == "fail" and effects == [Finish("failed", "CallLog not found after 5 calllog retries")]


def test_the_fetch_phase_spends_its_own_budget():
    effects, d = drive_with(retry_later("7", "CA1", 5, 0, "fetch", "audio not available", FIXED), [None] * 5)
    assert d.action != "fail" and effects[0].fields["fetch_retry_count"] == 1


def test_the_seed_raises_for_rq_to_retry_at_once():
    seed = make_policy("seed")
    effects, _d = drive_with(retry_later("7", "CA1", 0, 0, "calllog", "CallLog not found", seed), [None] * 5)
    assert [effect_type(e) for e in effects] == [Save, Emit, Save, Emit, RetryByRQ]


# --------------------------------------------------------------------------- the whole job

from loopfix.reference_app.flows.effects import FetchAudio, Release, StartRun, Transcribe  # noqa: E402
from loopfix.reference_app.flows.recording import Job, recording_job  # noqa: E402

JOB = Job("7", "CA1", 1, 0, 0, 0, "rq7", "rq7")


def kinds(effects):
    """Each effect's name: a Coord's op (then its record's kind, when it records its answer), a
    Release's calls and record, an Emit's kind, else the effect's class."""
    names = []
    for e in effects:
        if type(e) is not tuple:
            names.append(type(e).__name__)
        elif e[0] is Release:
            names += ["release_inflight"] * (e[1] is not None) + ["release_slot", "slot.release"]
        else:
            names += [e[1]] + ([e[3]] if len(e) > 3 else [])
    return names


def test_a_job_that_fetches_finishes_then_releases_its_claim_and_then_its_slot():
    effects, value = drive_with(recording_job(JOB, FIXED),
                                ["RE1", True, True, ("ok", ""), None, None])
    assert kinds(effects) == ["StartRun", "acquire_slot", "slot.acquire", "claim_inflight",
                              "FetchAudio", "Finish", "release_inflight", "release_slot", "slot.release"]
    assert value == {"status": "done", "error": None, "permanent": False}


def test_no_calllog_yet_retries_without_touching_a_slot():
    effects, value = drive_with(recording_job(JOB, FIXED), [None, None, None, None, None, None])
    assert "acquire_slot" not in kinds(effects) and value["retry"] == 1


def test_a_recording_in_flight_elsewhere_defers_and_still_frees_the_slot_last():
    effects, value = drive_with(recording_job(JOB, FIXED), ["RE1", True, False] + [None] * 4)
    assert kinds(effects)[-5:] == ["Save", "Park", "job.end", "release_slot", "slot.release"]
    assert "release_inflight" not in kinds(effects) and "deferred" in value


def test_a_failed_fetch_retries_on_the_fetch_budget_and_releases_both_claims():
    effects, value = drive_with(recording_job(JOB, FIXED),
                                ["RE1", True, True, ("missing", "404")] + [None] * 6)
    assert effects[4].fields["fetch_retry_count"] == 1
    assert effects[4].fields["error"].startswith("audio not available (404) (fetch attempt 1/")
    assert kinds(effects)[-3:] == ["release_inflight", "release_slot", "slot.release"] and value["retry"] == 1


def test_the_seeds_retry_raises_for_rq_after_releasing_the_claim_and_the_slot():
    seed = make_policy("seed")
    done = []

    def handle(effect):
        done.append(effect)
        if isinstance(effect, RetryByRQ):
            raise RuntimeError(effect.error)
        answers = {StartRun: "RE1", FetchAudio: ("transient", "503")}
        if type(effect) in answers:
            return answers[type(effect)]
        return True if (type(effect) is tuple and effect[0] is Coord) else None

    try:
        drive(recording_job(JOB, seed), handle)
        raised = False
    except RuntimeError:
        raised = True
    assert raised is True
    assert kinds(done)[-3:] == ["release_inflight", "release_slot", "slot.release"]


def test_a_worker_dying_mid_download_releases_nothing():
    flow = recording_job(JOB, FIXED)
    effects = []
    result = None
    while True:
        effect = flow.send(result)
        effects.append(effect)
        if isinstance(effect, FetchAudio):
            break
        result = {StartRun: "RE1"}.get(type(effect), True if (type(effect) is tuple and effect[0] is Coord) else None)
    flow.close()  # the model's worker crashed: its process (and the flow) is dropped
    assert "release_slot" not in kinds(effects)


def test_the_models_transcription_comes_after_the_claim_and_slot_are_freed():
    job = JOB._replace(transcribe=True)
    effects, value = drive_with(recording_job(job, FIXED),
                                ["RE1", True, True, ("ok", ""), None, None, None])
    assert kinds(effects)[-5:] == ["release_inflight", "release_slot", "slot.release", "Transcribe", "Finish"]
    assert value["status"] == "done" and any(type(e) is Transcribe for e in effects)


def test_a_recorded_coordination_call_records_its_answer_as_the_last_field():
    from loopfix.reference_app.flows.effects import tagged

    class Slots:
        def release_slot(self, business_id, owner):
            return (business_id, owner) == (1, "rq7")

    records = []
    effect = (Coord, "release_slot", (1, "rq7"), "slot.release", ("7", 1))
    assert tagged(effect, Slots(), lambda kind, **fields: records.append((kind, fields))) is True
    assert records == [("slot.release", {"job_id": "7", "business_id": 1, "freed": True})]


def test_a_release_frees_the_claim_then_the_slot_and_records_whether_the_slot_was_still_held():
    from loopfix.reference_app.flows.effects import tagged

    class Claims:
        def __init__(self, fail=False):
            self.calls, self.fail = [], fail

        def release_inflight(self, recording_sid, owner):
            self.calls.append(("release_inflight", recording_sid, owner))
            if self.fail:
                raise ConnectionError("redis down")
            return True

        def release_slot(self, business_id, owner):
            self.calls.append(("release_slot", business_id, owner))
            return False  # lapsed meanwhile

    records = []
    emit = lambda kind, **fields: records.append((kind, fields))  # noqa: E731
    claims = Claims()
    assert tagged((Release, ("RE1", "rq7"), (1, "rq7"), ("7", 1)), claims, emit) is None
    assert claims.calls == [("release_inflight", "RE1", "rq7"), ("release_slot", 1, "rq7")]
    assert records == [("slot.release", {"job_id": "7", "business_id": 1, "freed": False})]
    unclaimed = Claims()
    tagged((Release, None, (1, "rq7"), ("7", 1)), unclaimed, emit)
    assert unclaimed.calls == [("release_slot", 1, "rq7")]
    down, records[:] = Claims(fail=True), []
    try:
        tagged((Release, ("RE1", "rq7"), (1, "rq7"), ("7", 1)), down, emit)
    except ConnectionError:
        pass
    assert down.calls == [("release_inflight", "RE1", "rq7")] and records == []  # the slot is not released
