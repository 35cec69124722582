"""Twilio misbehaving (issue 7 item 3), on real processes: gunicorn, two RQ workers, Redis and
the Twilio stand-in, its faults scripted at run time through /_config: a 5xx burst, a body cut
short under a Content-Length that promises more, a transfer that stalls until the client's read
timeout, and a 10-minute download (at time_scale 0.005).

Each recording ends downloaded exactly once after a bounded number of attempts on the
policy's backoff, nothing is declared stuck while it is healthy, and the whole time a player
polls every recording: each 200 it gets carries the complete file, never a partial one. On
`seed` a replayed callback fetches the recording again in place, over the file being served:
the same player then gets a short body.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests

from loopfix.harness.invariants import check_no_duplicate_download
from loopfix.loadtests.twilio_stub import mp3_bytes
from tests.conftest import add_business, auth, read_events
from tests.test_recording_pipeline import post_signed, recording_form, start, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.stack]

SCALE = 0.005
SIZE = 16_000
FULL = len(mp3_bytes(SIZE))


class Player(threading.Thread):
    """Polls the stream URL of every recording and the playback URL of those enqueued
    (`active`: a poll may start a download); keeps the length of each 200 body."""

    def __init__(self, stack, business: dict):
        super().__init__(daemon=True)
        self.stack, self.b = stack, business
        self.bodies: list[int] = []
        self.active: list[dict] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            paths = [f"/api/calls/{c['call_sid']}/recording/stream" for c in self.b["calls"]]
            paths += [f"/api/recordings/file/{c['call_sid']}" for c in list(self.active)]
            for path in paths:
                try:
                    r = requests.get(self.stack.app_url + path, headers=auth(self.b), timeout=5)
                except requests.RequestException:
                    continue
                if r.status_code == 200:
                    self.bodies.append(len(r.content))
            time.sleep(0.02)

    def __enter__(self) -> "Player":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.join(10)


def enqueue(stack, business: dict, call: dict) -> None:
    r = requests.post(f"{stack.app_url}/api/calls/{call['call_sid']}/recording/enqueue", headers=auth(business),
                      timeout=5)
    assert r.status_code == 202, r.text


def download_once(stack, business, call, player: Player, timeout=60) -> dict:
    enqueue(stack, business, call)
    player.active.append(call)
    rec = call["recording_sid"]
    wait_for(lambda: stack.ledger().get(rec, {}).get("completed", 0) >= 1, timeout, f"{rec} downloaded")
    return stack.ledger()[rec]


def test_5xx_burst_truncation_stall_and_a_ten_minute_download_each_end_in_one_complete_file(
        stack_factory, make_config):
    # heartbeat timeout 240 policy s (1.2 wall s; the default 60 is 0.3 wall s, which a busy
    # machine's scheduler can starve a heartbeat thread of): still well under the 600 s download
    # and the 300 s stuck timeout a judgement by age would apply
    stack, svc = start(stack_factory, make_config, workers=2, time_scale=SCALE, stub={"size_bytes": SIZE},
                       heartbeat_timeout_s=240)
    b = add_business(svc, calls=4, recording_url=stack.stub_url + "/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3")
    burst, cut, stalled, slow = b["calls"]
    with Player(stack, b) as player:
        stack.stub_config(script=["503", "500", "503"])
        assert download_once(stack, b, burst, player) == {"requests": 4, "completed": 1, "bytes": FULL, "sending": 0, "partial": 0}
        stack.stub_config(script=["truncate"])
        assert download_once(stack, b, cut, player)["partial"] == 1
        stack.stub_config(script=["stall"], stall_s=2_000)  # silent past the client's 5 s read timeout
        assert download_once(stack, b, stalled, player)["requests"] == 2  # the stalled one, then a whole one
        stack.stub_config(bandwidth_bps=SIZE / 600)  # a 10-minute download
        assert download_once(stack, b, slow, player, timeout=120)["completed"] == 1
        time.sleep(svc.policy.wall(svc.policy.stuck_timeout_s))  # a stuck-timeout re-run would start by now
    ledger = stack.ledger()
    assert [ledger[c["recording_sid"]]["completed"] for c in b["calls"]] == [1, 1, 1, 1]
    assert player.bodies and set(player.bodies) == {FULL}  # every 200 was the whole file
    events = read_events(stack.config.history_dir)
    assert check_no_duplicate_download(events, svc.policy).valid is True
    assert not [e for e in events if e["kind"] == "job.stuck"]
    retries = {c["call_sid"]: [e["delay"] for e in events if e["kind"] == "job.retry" and e["call_sid"] == c["call_sid"]]
               for c in b["calls"]}
    assert retries == {burst["call_sid"]: [60, 120, 240], cut["call_sid"]: [60], stalled["call_sid"]: [60],
                       slow["call_sid"]: []}


@pytest.mark.slow
def test_persistent_5xx_stops_after_the_retry_budget(stack_factory, make_config):
    stack, svc = start(stack_factory, make_config, workers=1, time_scale=0.002, stub={"size_bytes": SIZE, "error_rate": 1})
    b = add_business(svc, calls=1, recording_url=stack.stub_url + "/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3")
    call = b["calls"][0]
    enqueue(stack, b, call)
    budget = svc.policy.wall(sum([60, 120, 240, 480, 960])) + 15
    wait_for(lambda: any(e["kind"] == "job.end" and e.get("outcome") == "failed"
                         for e in read_events(stack.config.history_dir)), budget, "the run to fail for good")
    time.sleep(svc.policy.wall(300))
    assert stack.ledger()[call["recording_sid"]]["requests"] == 1 + svc.policy.max_fetch_retries  # no loop
    events = read_events(stack.config.history_dir)
    assert [(e["phase"], e["attempt"]) for e in events if e["kind"] == "job.retry"] == [
        ("fetch", n) for n in range(1, svc.policy.max_fetch_retries + 1)]  # the fetch budget, not the CallLog's


def test_seed_fetches_a_recording_again_over_the_file_being_served(stack_factory, make_config):
    # seed: a replayed callback after the dedup window enqueues a second run, and its download
    # (not idempotent) rewrites the served file in place for the whole of a slow transfer
    stack, svc = start(stack_factory, make_config, workers=2, variant="seed", time_scale=SCALE,
                       stub={"size_bytes": SIZE})
    b = add_business(svc, calls=1)  # the call exists; its recording arrives by callback
    call = b["calls"][0]
    rec, form = call["recording_sid"], recording_form(stack, b, call["call_sid"], call["recording_sid"], ".mp3")
    with Player(stack, b) as player:
        assert post_signed(stack, "/webhooks/twilio/recording", b, form).status_code == 204
        wait_for(lambda: stack.ledger().get(rec, {}).get("completed", 0) >= 1, 60, "the first download")
        wait_for(lambda: FULL in player.bodies, 30, "the player to get the whole file")
        stack.stub_config(bandwidth_bps=SIZE / 600)  # the second transfer takes 10 policy minutes
        time.sleep(svc.policy.wall(svc.policy.enqueue_dedup_ttl_s + 10))
        assert post_signed(stack, "/webhooks/twilio/recording", b, form).status_code == 204  # Twilio's replay
        wait_for(lambda: stack.ledger()[rec]["completed"] >= 2, 60, "the second download")
    assert any(n < FULL for n in player.bodies)  # a partial file was served
    assert check_no_duplicate_download(read_events(stack.config.history_dir), svc.policy).valid is False
