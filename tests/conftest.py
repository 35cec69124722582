"""Shared fixtures: real Redis (flushed around each test), an app per variant on SQLite in a
temp dir, seeded businesses, signed Twilio webhooks, and the process stack.

Redis is a private `redis-server` that this test session starts on a free port and stops by
pid, so concurrent test runs on one machine never flush each other's queues and locks. Without
`redis-server` on PATH the tests use database 15 of REDIS_URL (default 127.0.0.1:6379). A test
that needs Redis fails, never skips, when no server answers.

The database is SQLite in the test's temp dir, or, with LOOPFIX_TEST_DATABASE=postgresql, a
schema of the test's own on the machine's PostgreSQL (CI runs the integration tests both ways).
"""
from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from twilio.request_validator import RequestValidator

from loopfix.loadtests.stack import Stack
from loopfix.reference_app import create_app
from loopfix.reference_app.config import Config
from loopfix.reference_app.models import Business, CallLog
from loopfix.reference_app.policy import make_policy
from loopfix.reference_app.services import Services

import os
import shutil

BASE_REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def required_program(names: tuple[str, ...], install: str, env_var: str | None = None) -> str:
    """The path of a program a test drives: `env_var`'s value, else the first of `names` on PATH
    (or in /usr/sbin, /sbin). .ci/run installs each one, so in CI (CI=true) a missing program fails
    the test; elsewhere the test is skipped, saying how to install it."""
    found = os.environ.get(env_var) if env_var else None
    for name in names:
        found = found or shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        message = f"{names[0]} is not installed ({install}; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory):
    """URL of this test session's own Redis (see the module docstring)."""
    if shutil.which("redis-server") is None:
        yield BASE_REDIS.rsplit("/", 1)[0] + "/15"
        return
    st = Stack(tmp_path_factory.mktemp("redis"), Config())
    yield st.start_redis()
    st.stop()


@pytest.fixture
def redis_url(private_redis):
    conn = redis.Redis.from_url(private_redis)
    conn.flushdb()
    yield private_redis
    conn.flushdb()


PG_BASE = os.environ.get("LOOPFIX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")  # trust auth
TEST_DATABASE = os.environ.get("LOOPFIX_TEST_DATABASE", "sqlite")
if TEST_DATABASE not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"LOOPFIX_TEST_DATABASE must be sqlite or postgresql, not {TEST_DATABASE!r}")


@contextmanager
def _database(kind: str):
    """'' (SQLite in the run's data dir) or the URL of a PostgreSQL schema of its own
    (search_path in the URL), dropped afterwards."""
    if kind == "sqlite":
        yield ""
        return
    import psycopg

    schema = "lf_test_" + secrets.token_hex(4)
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """Each database in turn, for tests that must hold on both. List it before stack_factory:
    its processes must stop before the schema goes."""
    with _database(request.param) as url:
        yield url


@pytest.fixture
def default_database_url():
    """The database of tests that do not choose one (LOOPFIX_TEST_DATABASE)."""
    with _database(TEST_DATABASE) as url:
        yield url


@pytest.fixture
def make_config(tmp_path, redis_url, default_database_url):
    """make_config(variant='fixed', faults='', time_scale=1.0, database_url=None, **policy_overrides)
    -> Config; database_url None is the session's default database, '' is SQLite."""

    def build(variant="fixed", faults="", time_scale=1.0, media_hosts=("api.twilio.com",), history=True,
              database_url=None, **overrides):
        database_url = default_database_url if database_url is None else database_url
        return Config(redis_url=redis_url, database_url=database_url, data_dir=tmp_path / "data",
                      media_hosts=tuple(media_hosts),
                      history_dir=tmp_path / "history" if history else None, run_epoch=time.time(),
                      policy=make_policy(variant, faults, time_scale, overrides))

    return build


@pytest.fixture
def app_factory(make_config):
    """app_factory(**make_config args) -> (flask test client, Services)"""

    def build(**kwargs):
        cfg = kwargs.pop("config", None) or make_config(**kwargs)
        app = create_app(cfg)
        return app.test_client(), app.extensions["loopfix"]

    return build


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def add_business(svc: Services, calls: int = 1, recording_url: str | None = None) -> dict:
    """A business with `calls` calls; with `recording_url` ('{sid}' filled in) each call has a
    recording already attached."""
    with svc.sessions() as s:
        b = Business(name="b", api_token=secrets.token_urlsafe(16), twilio_account_sid=sid("AC"),
                     twilio_auth_token=secrets.token_hex(16))
        s.add(b)
        s.flush()
        out = {"id": b.id, "token": b.api_token, "account_sid": b.twilio_account_sid,
               "auth_token": b.twilio_auth_token, "calls": []}
        for _ in range(calls):
            call_sid, rec_sid = sid("CA"), sid("RE")
            url = recording_url.format(sid=rec_sid, account=b.twilio_account_sid) if recording_url else None
            s.add(CallLog(business_id=b.id, call_sid=call_sid, recording_sid=rec_sid if url else None,
                          recording_url=url, created_at=time.time()))
            out["calls"].append({"call_sid": call_sid, "recording_sid": rec_sid})
        s.commit()
    return out


def read_events(directory) -> list[dict]:
    """Every event the live processes appended under `directory`, ordered by time."""
    import json

    events = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return sorted(events, key=lambda e: e["t"])


def auth(business: dict) -> dict:
    return {"Authorization": f"Bearer {business['token']}"}


def sign(auth_token: str, url: str, form) -> str:
    """X-Twilio-Signature as Twilio computes it (twilio's RequestValidator); `form` a dict or a
    werkzeug MultiDict (repeated keys)."""
    return RequestValidator(auth_token).compute_signature(url, form)


def signed_post(client, url_base: str, path: str, business: dict, form: dict, token: str | None = None):
    """POST a form the way Twilio does, signed with the business's auth token (or `token`)."""
    full = url_base.rstrip("/") + path
    sig = sign(token or business["auth_token"], full, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": sig}, base_url=url_base)


@pytest.fixture
def stack_factory(tmp_path, default_database_url):  # set up after the database: stopped before it goes
    """stack_factory(config) -> Stack in tmp_path/run, stopped (every process, by pid) at teardown."""
    stacks: list[Stack] = []

    def build(config: Config) -> Stack:
        st = Stack(tmp_path / "run", replace(config, data_dir=(tmp_path / "run" / "data").resolve()))
        stacks.append(st)
        return st

    yield build
    for st in stacks:
        st.stop()


CHECKOUT = Path(__file__).resolve().parent.parent
# Where a default path would land in the checkout (`runs/<run-id>`, `data/`); test-artefacts is
# test_reports.py's screenshot, kept there on purpose for CI to collect.
GUARDED = ("runs", "data")
KEPT = {CHECKOUT / "runs" / "test-artefacts"}


def _checkout_entries() -> set[Path]:
    return {entry for name in GUARDED if (CHECKOUT / name).is_dir() for entry in (CHECKOUT / name).iterdir()} - KEPT


@pytest.fixture(autouse=True)
def _nothing_written_into_the_checkout(request):
    """Every test writes its run directories, databases and histories under tmp_path (removed by
    pytest unless the test failed: tmp_path_retention_policy), never into the checkout's runs/ or
    data/, where nothing would clean them up."""
    before = _checkout_entries()
    yield
    left = sorted(str(p.relative_to(CHECKOUT)) for p in _checkout_entries() - before)
    assert left == [], f"{request.node.nodeid} wrote into the checkout: {left}; write under tmp_path"


# Fixtures that start a service: a test that uses one (directly or through another fixture) gets
# its marker, so `-m "not redis"` / `-m "not stack"` deselect it without anyone remembering to.
_MARKER_FIXTURES = {"redis": ("private_redis",), "stack": ("stack_factory",)}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _MARKER_FIXTURES.items():
            if used & set(fixtures) and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
