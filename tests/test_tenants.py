"""Tenant isolation: one business's token against another business's calls, recordings, streams,
downloads, enqueues, leads and delete jobs. Hypothesis draws the endpoint, the victim's
resource and the request details; every answer must be exactly the answer for an id that does
not exist at all (same status, same body, same content type), and nothing of the victim's may
change (no run enqueued for its calls, no lead deleted, its job untouched).

Fault `tenant_unscoped_lookup` (calls and jobs looked up by id alone) shows the suite catching
a leak.
"""
from __future__ import annotations

import random
import secrets
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from loopfix.reference_app.delete_job import delete_leads
from loopfix.reference_app.models import BackgroundJob, CallLog, Lead, RecordingFile, RecordingRun
from tests.conftest import add_business, auth, sid

pytestmark = pytest.mark.redis

STUB = "https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3"
CALL_ENDPOINTS = [
    ("GET", "/api/recordings/file/{id}"),
    ("GET", "/api/calls/{id}/recording/stream"),
    ("GET", "/api/calls/{id}/recording/download"),
    ("POST", "/api/calls/{id}/recording/enqueue"),
]
JOB_ENDPOINTS = [("GET", "/api/jobs/{id}"), ("POST", "/api/jobs/{id}/resume")]
RANGES = [None, "bytes=0-99", "bytes=-10", "bytes=5-", "bytes=0-0,5-9", "bytes=999999-"]


def add_leads(svc, business_id: int, n: int) -> list[int]:
    with svc.sessions() as s:
        leads = [Lead(business_id=business_id, name=f"lead{i}", phone="+1555") for i in range(n)]
        s.add_all(leads)
        s.commit()
        return [lead.id for lead in leads]


def make_ready(svc, business: dict, call: dict) -> None:
    """Give `call` a downloaded recording file, as a finished job would."""
    path = svc.config.recordings_dir / f"{call['recording_sid']}.mp3"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(secrets.token_bytes(500))
    with svc.sessions() as s:
        s.add(RecordingFile(business_id=business["id"], recording_sid=call["recording_sid"], call_sid=call["call_sid"],
                            path=str(path), size=500, sha256="0" * 64, content_type="audio/mpeg", created_at=time.time()))
        s.commit()


@pytest.fixture
def tenants(app_factory):
    """(client, svc, attacker, victim): the victim has ready, pending and URL-less calls, leads
    and an active delete job; the attacker has a call and leads of its own."""

    def build(**cfg):
        client, svc = app_factory(time_scale=0.01, history=False, **cfg)
        attacker = add_business(svc, calls=1, recording_url=STUB)
        victim = add_business(svc, calls=3, recording_url=STUB)
        with svc.sessions() as s:  # calls: 0 ready, 1 pending download, 2 without a recording
            s.execute(update(CallLog).where(CallLog.call_sid == victim["calls"][2]["call_sid"])
                      .values(recording_url=None, recording_sid=None))
            s.commit()
        make_ready(svc, victim, victim["calls"][0])
        make_ready(svc, attacker, attacker["calls"][0])
        victim["leads"] = add_leads(svc, victim["id"], 20)
        attacker["leads"] = add_leads(svc, attacker["id"], 5)
        r = client.post("/api/leads/bulk-delete", json={"lead_ids": victim["leads"][:3]}, headers=auth(victim))
        assert r.status_code == 202
        victim["job_id"] = r.json["job_id"]
        return client, svc, attacker, victim

    return build


def answer(response) -> tuple:
    return response.status_code, response.content_type, response.get_json(silent=True), response.get_data()[:200]


def request(client, method: str, path: str, who: dict, rng: str | None):
    headers = dict(auth(who), **({"Range": rng} if rng else {}))
    return client.open(path, method=method, headers=headers)


def victim_state(svc, victim: dict) -> tuple:
    calls = [c["call_sid"] for c in victim["calls"]]
    with svc.sessions() as s:
        runs = s.scalar(select(func.count(RecordingRun.id)).where(RecordingRun.call_sid.in_(calls)))
        leads = s.scalar(select(func.count(Lead.id)).where(Lead.business_id == victim["id"]))
        job = s.execute(select(BackgroundJob.status, BackgroundJob.rq_job_id, BackgroundJob.processed)
                        .where(BackgroundJob.id == victim["job_id"])).one()
    return runs, leads, tuple(job)


def cross_tenant_probe(client, svc, attacker, victim, shrink: bool = True):
    """A hypothesis test: one cross-tenant request, compared with the same request for an id
    that exists nowhere. Returns (run it, cases tried)."""
    tried = []

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              phases=list(Phase) if shrink else [Phase.generate])
    @given(st.sampled_from(CALL_ENDPOINTS + JOB_ENDPOINTS), st.integers(0, 2), st.sampled_from(RANGES))
    def probe(endpoint, which_call, rng):
        method, template = endpoint
        if template.startswith("/api/jobs"):
            theirs, nobody = victim["job_id"], victim["job_id"] + 10_000
        else:
            theirs, nobody = victim["calls"][which_call]["call_sid"], sid("CA")
        tried.append(template)
        cross = request(client, method, template.format(id=theirs), attacker, rng)
        unknown = request(client, method, template.format(id=nobody), attacker, rng)
        assert answer(cross) == answer(unknown), (method, template, which_call, rng)

    return probe, tried


def test_cross_tenant_reads_streams_downloads_enqueues_and_job_calls_look_like_not_found(tenants):
    client, svc, attacker, victim = tenants()
    before = victim_state(svc, victim)
    probe, tried = cross_tenant_probe(client, svc, attacker, victim)
    probe()
    assert victim_state(svc, victim) == before
    # the victim's own token still sees its things (the ids were real)
    assert request(client, "GET", f"/api/calls/{victim['calls'][0]['call_sid']}/recording/stream", victim,
                   None).status_code == 200
    assert request(client, "GET", f"/api/jobs/{victim['job_id']}", victim, None).status_code == 200
    print(f"\ncross-tenant cases tried: {len(tried)}")


def test_with_unscoped_lookups_the_same_probe_finds_the_leak(tenants):
    client, svc, attacker, victim = tenants(faults="tenant_unscoped_lookup")
    probe, _ = cross_tenant_probe(client, svc, attacker, victim, shrink=False)
    with pytest.raises((AssertionError, BaseExceptionGroup)):  # hypothesis groups distinct failures
        probe()


def test_bulk_delete_of_another_tenants_leads_deletes_none_and_looks_like_unknown_ids(tenants):
    client, svc, attacker, victim = tenants()
    rng = random.Random(7)
    answers = []
    for trial in range(6):
        theirs = rng.sample(victim["leads"], rng.randint(1, len(victim["leads"])))
        unknown = [max(victim["leads"] + attacker["leads"]) + 1000 + i for i in range(len(theirs))]
        for ids in (theirs, unknown):
            r = client.post("/api/leads/bulk-delete", json={"lead_ids": ids}, headers=auth(attacker))
            assert r.status_code == 202 and not r.json["existing"], r.json
            delete_leads(r.json["job_id"])  # run the job inline, to completion
            progress = client.get(f"/api/jobs/{r.json['job_id']}", headers=auth(attacker)).json
            answers.append((r.status_code, tuple(sorted(r.json)), progress["status"], progress["succeeded"],
                            progress["skipped"] == len(ids)))
    assert len(set(answers)) == 1 and answers[0][2:] == ("completed", 0, True), answers
    with svc.sessions() as s:
        assert s.scalar(select(func.count(Lead.id)).where(Lead.business_id == victim["id"])) == len(victim["leads"])


def test_the_lead_list_shows_only_the_callers_own_leads(tenants):
    client, _svc, attacker, victim = tenants()
    seen = client.get("/api/leads?limit=1000", headers=auth(attacker)).json
    assert {lead["id"] for lead in seen["leads"]} == set(attacker["leads"]) and seen["total"] == len(attacker["leads"])
    after = client.get(f"/api/leads?after={min(victim['leads']) - 1}&limit=1000", headers=auth(attacker)).json
    assert not {lead["id"] for lead in after["leads"]} & set(victim["leads"])
