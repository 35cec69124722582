"""The lead-deletion API in process (issue 3): bad input and oversized requests get a clear 400
and no job, another tenant's job is indistinguishable from none, the list pages through the
business's remaining leads, and resuming a queued job does not enqueue it twice. Jobs through
real workers: test_leads.py."""
from __future__ import annotations

import pytest

from tests.conftest import auth
from tests.leads_support import Api, business_with_leads, in_process, jobs_of, lead_config


# ----------------------------------------------------------------------------- bad input, tenants, listing


@pytest.mark.parametrize("body, error", [
    ({"lead_ids": "1,2,3"}, "lead_ids_not_a_list"),
    ({"lead_ids": {"1": 1}}, "lead_ids_not_a_list"),
    ({}, "lead_ids_not_a_list"),
    ({"lead_ids": []}, "lead_ids_empty"),
    ({"lead_ids": [1, "2"]}, "lead_ids_not_integers"),
    ({"lead_ids": [1, 2.0]}, "lead_ids_not_integers"),
    ({"lead_ids": [True]}, "lead_ids_not_integers"),
    ({"lead_ids": [0]}, "lead_ids_not_integers"),
    ({"lead_ids": [-4]}, "lead_ids_not_integers"),
    ({"lead_ids": [2**63]}, "lead_ids_not_integers"),
    ({"lead_ids": [None]}, "lead_ids_not_integers"),
    ([1, 2, 3], "body_not_a_json_object"),
])
def test_bad_bulk_delete_input_gets_a_clear_400_and_no_job(lead_config, body, error):
    client, svc = in_process(lead_config())
    b = business_with_leads(svc, 3)
    r = client.post("/api/leads/bulk-delete", json=body, headers=auth(b))
    assert r.status_code == 400 and r.json["error"] == error and r.json["message"]
    assert jobs_of(svc, b["id"]) == []


def test_too_many_lead_ids_are_refused_and_the_limit_is_stated(lead_config):
    client, svc = in_process(lead_config())
    b = business_with_leads(svc, 3)
    r = client.post("/api/leads/bulk-delete", json={"lead_ids": list(range(1, 100_002))}, headers=auth(b))
    assert r.status_code == 400 and r.json["error"] == "too_many_lead_ids"
    limit = int(r.json["message"].split("at most ")[1].split()[0])
    assert client.post("/api/leads/bulk-delete", json={"lead_ids": list(range(1, limit + 2))},
                       headers=auth(b)).status_code == 400
    assert client.post("/api/leads/bulk-delete", json={"lead_ids": list(range(1, limit + 1))},
                       headers=auth(b)).status_code == 202


def test_non_json_and_unauthenticated_requests_are_refused(lead_config):
    client, svc = in_process(lead_config())
    b = business_with_leads(svc, 3)
    r = client.post("/api/leads/bulk-delete", data="lead_ids=1", headers=auth(b))
    assert r.status_code == 400 and r.json["error"] == "body_not_a_json_object"
    assert client.post("/api/leads/bulk-delete", json={"lead_ids": [1]}).status_code == 401
    assert client.get("/api/jobs/1", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_another_business_job_is_indistinguishable_from_no_job(lead_config):
    client, svc = in_process(lead_config())
    a, b = business_with_leads(svc, 3), business_with_leads(svc, 3)
    job_id = Api(a, client=client).bulk_delete(a["lead_ids"])[1]["job_id"]
    theirs, none = Api(b, client=client), 10**6
    for method, path in (("GET", "/api/jobs/{}"), ("POST", "/api/jobs/{}/resume")):
        assert theirs.call(method, path.format(job_id)) == theirs.call(method, path.format(none))
        assert theirs.call(method, path.format(job_id))[0] == 404
    assert theirs.call("GET", f"/api/jobs/{2**40}")[0] == 404
    assert Api(a, client=client).job(job_id)["status"] == "queued"


def test_leads_list_pages_through_the_business_remaining_leads(lead_config):
    client, svc = in_process(lead_config())
    a, b = business_with_leads(svc, 25), business_with_leads(svc, 4)
    api, seen, after = Api(a, client=client), [], 0
    while after is not None:
        status, page = api.call("GET", "/api/leads", params={"after": after, "limit": 10})
        assert status == 200 and page["total"] == 25
        seen += [lead["id"] for lead in page["leads"]]
        after = page["next_after"]
    assert seen == a["lead_ids"]
    for bad in ({"limit": 0}, {"limit": 10**6}, {"after": -1}, {"after": "x"}):
        status, body = api.call("GET", "/api/leads", params=bad)
        assert status == 400 and body["error"] == "bad_page"


def test_resume_of_a_queued_job_does_not_enqueue_it_twice(lead_config):
    client, svc = in_process(lead_config())
    a = business_with_leads(svc, 3)
    api = Api(a, client=client)
    job_id = api.bulk_delete(a["lead_ids"])[1]["job_id"]
    status, body = api.resume(job_id)
    assert status == 202 and body["resumed"] is False and body["status"] == "queued"
    assert len(svc.queue("leads")) == 1
