"""The data a load run starts from, written straight into the app's database before any load:
businesses (API token, AccountSid, auth token), older calls whose recording URL points at the
Twilio stand-in but was never downloaded (the archive the players storm on; a share with no
URL answers 404), and leads for the bulk-deleters. The Locust processes read the same data
from `fixtures.json` in the run directory, so they know which tokens and calls exist.
"""
from __future__ import annotations

import json
import random
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from loopfix.harness.scenario import Scenario
from loopfix.reference_app.models import Business, CallLog, Lead
from loopfix.reference_app.services import Services

FIXTURES_FILE = "fixtures.json"
ARCHIVE_MIN_PER_BUSINESS = 20  # players need recordings to open even when the scenario lists none


def new_sid(prefix: str, rng: random.Random | None = None) -> str:
    """A Twilio-shaped sid: prefix + 32 hex digits."""
    return prefix + (f"{rng.getrandbits(128):032x}" if rng else secrets.token_hex(16))


def recording_url(stub_url: str, account_sid: str, recording_sid: str, ext: str = ".mp3") -> str:
    return f"{stub_url}/2010-04-01/Accounts/{account_sid}/Recordings/{recording_sid}{ext}"


def seed_fixtures(svc: Services, scenario: Scenario, stub_url: str) -> dict[str, Any]:
    """Create the scenario's businesses, archive calls and leads; return them as plain data."""
    rng = random.Random(scenario.seed)
    per_business = max(ARCHIVE_MIN_PER_BUSINESS, -(-scenario.recordings.archive_calls // scenario.businesses))
    out: list[dict[str, Any]] = []
    with svc.sessions() as s:
        for i in range(scenario.businesses):
            b = Business(name=f"load-{i + 1}", api_token=secrets.token_urlsafe(24),
                         twilio_account_sid=new_sid("AC", rng), twilio_auth_token=secrets.token_hex(16))
            s.add(b)
            s.flush()
            calls, rows = [], []
            for _ in range(per_business):
                call_sid, rec_sid = new_sid("CA", rng), new_sid("RE", rng)
                has_url = rng.random() < scenario.recordings.url_fraction
                rows.append(dict(business_id=b.id, call_sid=call_sid, call_status="completed", created_at=time.time(),
                                 recording_sid=rec_sid if has_url else None,
                                 recording_url=recording_url(stub_url, b.twilio_account_sid, rec_sid) if has_url
                                 else None))
                calls.append({"call_sid": call_sid, "has_url": has_url})
            s.execute(insert(CallLog), rows)
            leads = scenario.bulk_delete.leads_per_business
            if leads:
                s.execute(insert(Lead), [dict(business_id=b.id, name=f"lead {j}", phone=f"+1555{j:07d}")
                                         for j in range(leads)])
            out.append({"id": b.id, "api_token": b.api_token, "account_sid": b.twilio_account_sid,
                        "auth_token": b.twilio_auth_token, "archive": calls})
        s.commit()
    return {"stub_url": stub_url, "businesses": out}


def write_fixtures(run_dir: Path, fixtures: dict[str, Any]) -> Path:
    path = Path(run_dir) / FIXTURES_FILE
    path.write_text(json.dumps(fixtures, indent=1) + "\n", encoding="utf-8")
    return path


def read_fixtures(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / FIXTURES_FILE).read_text(encoding="utf-8"))
