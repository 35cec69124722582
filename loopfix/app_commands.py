"""`loopfix serve | worker | twilio-stub | seed | policy`: run and inspect the reference app.

Every setting is an environment variable (see reference_app/config.py); the flags here set the
same things. A bad value exits with code 2 and one line saying what to fix.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from loopfix.exits import BadInput
from loopfix.redis_check import require_redis
from loopfix.reference_app.config import SENDFILE_HEADERS, Config
from loopfix.reference_app.config import parse_assignments, split_assignments
from loopfix.reference_app.serving import WORKER_CLASSES, gunicorn_argv
from loopfix.reference_app.policy import FAULTS, VARIANTS, describe, make_policy


def policy_options(fn):
    """--variant/--faults/--time-scale/--set, shared by every command that builds a Policy."""
    fn = click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
                      help="Override one policy constant, e.g. --set max_retries=6 (repeatable).")(fn)
    fn = click.option("--time-scale", type=float, default=None,
                      help="Multiply every duration (0.01: the 1,860 s backoff in ~19 s). Env LOOPFIX_TIME_SCALE.")(fn)
    fn = click.option("--faults", default=None, metavar="A,B",
                      help="Switch on named faults on top of the variant (see `loopfix policy`). Env LOOPFIX_FAULTS.")(fn)
    fn = click.option("--variant", type=click.Choice(VARIANTS), default=None,
                      help="before | seed | fixed (default fixed). Env LOOPFIX_VARIANT.")(fn)
    return fn


def build_config(variant=None, faults=None, time_scale=None, assignments=(), **paths) -> Config:
    """Config from the environment, with flags on top; ValueError → click's usage error."""
    try:
        cfg = Config.from_env()
        env_overrides = parse_assignments(split_assignments(os.environ.get("LOOPFIX_POLICY", "")))
        policy = make_policy(
            variant=variant or cfg.policy.variant,
            faults=faults if faults is not None else ",".join(sorted(cfg.policy.extra_faults)),
            time_scale=time_scale if time_scale is not None else cfg.policy.time_scale,
            overrides={**env_overrides, **parse_assignments(list(assignments))},
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cfg = replace(cfg, policy=policy)
    changes = {k: v for k, v in paths.items() if v not in (None, "")}
    for key in ("data_dir", "history_dir"):
        if key in changes:
            changes[key] = Path(changes[key])
    return replace(cfg, **changes)


def service_options(fn):
    fn = click.option("--history-dir", default=None, help="Append history events here. Env LOOPFIX_HISTORY_DIR.")(fn)
    fn = click.option("--data-dir", default=None, help="Downloaded files and the SQLite db. Env LOOPFIX_DATA_DIR.")(fn)
    fn = click.option("--database-url", default=None, help="SQLAlchemy URL (default SQLite). Env DATABASE_URL.")(fn)
    fn = click.option("--redis-url", default=None, help="Env REDIS_URL (default redis://127.0.0.1:6379/0).")(fn)
    return policy_options(fn)


def _export(cfg: Config) -> None:
    os.environ.update(cfg.to_env())


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="gunicorn processes")
@click.option("--worker-class", default="gevent", show_default=True, type=click.Choice(WORKER_CLASSES),
              help="gevent: a greenlet per connection (slow or idle clients hold no thread); "
                   "gthread: --threads threads per process")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="threads per process (gthread)")
@click.option("--worker-connections", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="connections per process (gevent)")
@click.option("--sendfile-header", type=click.Choice(SENDFILE_HEADERS[1:]), default=None,
              help="Behind nginx (X-Accel-Redirect) or Apache/lighttpd (X-Sendfile): the proxy sends the "
                   "recordings, the app only names them. Env LOOPFIX_SENDFILE.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=None,
              help="Refuse larger request bodies with 413, unread (default 1 MiB). Env LOOPFIX_MAX_BODY_BYTES.")
@service_options
def serve(host, port, workers, worker_class, threads, worker_connections, sendfile_header, max_body_bytes, **opts):
    """Run the reference app under gunicorn (real Flask, real Redis)."""
    try:
        cfg = build_config(**opts, sendfile_header=sendfile_header, max_body_bytes=max_body_bytes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _export(cfg)
    from loopfix.reference_app.services import Services

    Services(cfg).engine  # create the tables once, before gunicorn's workers race to do it
    os.environ.setdefault("LOOPFIX_PROC", "app")
    args = gunicorn_argv("loopfix.reference_app.wsgi:app", f"{host}:{port}", workers, threads, worker_class,
                         worker_connections, access_log=bool(os.environ.get("LOOPFIX_ACCESS_LOG")))
    os.execv(sys.executable, args)


@click.command()
@click.option("--burst", is_flag=True, help="Exit when the queues are empty (parked jobs are not waited for).")
@click.option("--simple", is_flag=True, help="Run jobs in this process instead of a forked work horse.")
@click.option("--name", default=None, help="RQ worker name (default: RQ's).")
@service_options
def worker(burst, simple, name, **opts):
    """Run one RQ worker on the recordings and leads queues, with loopfix's fine-grained ticker."""
    from loopfix.reference_app.services import Services
    from loopfix.reference_app.worker import run_worker

    cfg = build_config(**opts)
    require_redis(cfg.redis_url)  # one line naming the URL, not a traceback from RQ
    _export(cfg)
    os.environ.setdefault("LOOPFIX_PROC", "worker")
    run_worker(Services(cfg), burst=burst, simple=simple, name=name)


@click.command("twilio-stub")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8010, show_default=True, type=click.IntRange(0, 65535))
@click.option("--size-bytes", default=64_000, show_default=True, type=click.IntRange(1), help="audio body size")
@click.option("--latency-s", "latency_s", default=0.0, show_default=True, type=click.FloatRange(0),
              help="policy seconds before the first byte")
@click.option("--latency-sigma", "latency_sigma", default=0.0, show_default=True, type=click.FloatRange(0),
              help="> 0: each download's latency is --latency-s x lognormal(0, sigma), as the model's")
@click.option("--bandwidth-bps", "bandwidth_bps", default=0.0, show_default=True, type=click.FloatRange(0),
              help="bytes per policy second (0: unthrottled)")
@click.option("--error-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1), help="share of 503s")
@click.option("--truncate-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="share of bodies cut short")
@click.option("--time-scale", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Env LOOPFIX_TIME_SCALE (default 1.0)")
@click.option("--history-dir", default=None, type=click.Path(file_okay=False),
              help="record every audio fetch here (download.start/end, source target), as target mode does")
@click.option("--epoch", default=None, type=float, help="wall time (epoch s) the history counts from (default now)")
def twilio_stub(host, port, time_scale, history_dir, epoch, **settings):
    """Serve recordings the way Twilio does (and worse, on demand), with a download ledger."""
    from loopfix.loadtests.twilio_stub import StubSettings, serve as make_server
    from loopfix.reference_app.events import HistoryWriter

    scale = time_scale if time_scale is not None else float(os.environ.get("LOOPFIX_TIME_SCALE", "1") or 1)
    history = HistoryWriter(history_dir, "media", scale, time.time() if epoch is None else epoch, source="target")
    try:
        server = make_server(host, port, StubSettings(time_scale=scale, **settings), history)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"twilio stand-in on http://{host}:{server.server_address[1]} (ledger: /_ledger)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@click.command()
@click.option("--businesses", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--calls", default=3, show_default=True, type=click.IntRange(0, 1_000_000), help="calls per business")
@click.option("--leads", default=0, show_default=True, type=click.IntRange(0, 1_000_000), help="leads per business")
@click.option("--json", "as_json", is_flag=True, help="Print businesses, tokens, sids and lead ids as JSON.")
@service_options
def seed(businesses, calls, leads, as_json, **opts):
    """Create businesses (API token, AccountSid, auth token), calls and leads to drive the app with.

    Calls are created without a recording: send the recording webhook (signed with the
    business's auth token) to attach one; each call lists the RecordingSid to use.
    """
    from sqlalchemy.exc import SQLAlchemyError

    cfg = build_config(**opts)
    try:
        sqlite_folder(cfg.sqlalchemy_url)
        out = _seed(cfg, businesses, calls, leads)
    except SQLAlchemyError as exc:
        why = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise BadInput(f"cannot use the database at {_shown(cfg.sqlalchemy_url)}: {why}") from None
    except OSError as exc:
        raise BadInput(f"cannot use the database at {_shown(cfg.sqlalchemy_url)}: {exc.strerror or exc}") from None
    if as_json:
        click.echo(json.dumps({"businesses": out}, indent=2))
    else:
        for b in out:
            click.echo(f"business {b['id']}: token {b['api_token']}  account {b['account_sid']}  "
                       f"{len(b['calls'])} calls, {len(b['lead_ids'])} leads")


def _shown(url: str) -> str:
    """A database URL fit to print: its password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file (SQLite creates the file, not its folder)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _seed(cfg: Config, businesses: int, calls: int, leads: int) -> list[dict]:
    """Insert the businesses, their calls and leads; what `seed` prints, as data."""
    from sqlalchemy import insert

    from loopfix.reference_app.models import Business, CallLog, Lead
    from loopfix.reference_app.services import Services

    svc = Services(cfg)
    out = []
    with svc.sessions() as s:
        for i in range(businesses):
            b = Business(name=f"business-{i + 1}", api_token=secrets.token_urlsafe(24),
                         twilio_account_sid=_sid("AC"), twilio_auth_token=secrets.token_hex(16))
            s.add(b)
            s.flush()
            call_rows = [dict(business_id=b.id, call_sid=_sid("CA"), from_number="+15550000001",
                              to_number="+15550000002", call_status="completed", created_at=time.time())
                         for _ in range(calls)]
            if call_rows:
                s.execute(insert(CallLog), call_rows)
            lead_ids = []
            if leads:
                result = s.execute(insert(Lead).returning(Lead.id),
                                   [dict(business_id=b.id, name=f"lead {j}", phone=f"+1555{j:07d}")
                                    for j in range(leads)])
                lead_ids = sorted(result.scalars().all())
            out.append({"id": b.id, "name": b.name, "api_token": b.api_token, "account_sid": b.twilio_account_sid,
                        "auth_token": b.twilio_auth_token,
                        "calls": [{"call_sid": r["call_sid"], "recording_sid": _sid("RE")} for r in call_rows],
                        "lead_ids": lead_ids})
        s.commit()
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@policy_options
def policy(as_json, **opts):
    """Print every constant, the recording backoff schedule and its sum, the retry budgets'
    bound on a recording's runs, and every known fault with what it does, marked when on."""
    cfg = build_config(**opts)
    info = describe(cfg.policy)
    info["faults_known"] = FAULTS
    if as_json:
        click.echo(json.dumps(info, indent=2, default=list))
        return
    p = cfg.policy
    click.echo(f"variant {p.variant}, time_scale {p.time_scale:g}")
    for name, value in info["constants"].items():
        click.echo(f"  {name:28} {value}")
    click.echo(f"backoff schedule (s): {info['backoff_schedule_s']}  total {info['backoff_total_s']:g} s")
    click.echo(f"retry bound: {info['retry_bound']['explanation']}")
    click.echo(f"claim '~52 minutes': {info['claim_52_min']['explanation']}")
    click.echo(f"known faults ({len(FAULTS)}; * = on in this policy, {len(p.faults)} on; switch one on with "
               f"--faults NAME):")
    for name, what in FAULTS.items():
        click.echo(f"{'*' if name in p.faults else ' '} {name:30} {what}")


def register(cli: click.Group) -> None:
    for command in (serve, worker, twilio_stub, seed, policy):
        cli.add_command(command)
