"""The load test of one run: the scenario's client mix as Locust users, its storm profile as the
load shape, and the verdict as the exit code.

Run by `loopfix loadtest SCENARIO` (which starts the stack, seeds it, runs this and prints the
verdict table), or by hand against `loopfix stack up`:

    locust -f loadtests/locustfile.py --loopfix-run-dir runs/<run-id> --host <app url>

loopfix's options are Locust's own (`events.init_command_line_parser`: its parser, so also
locust.conf, with the environment as the fallback; Locust's --help is printed before it imports
a locustfile, so it does not list them):
`--loopfix-run-dir DIR` (LOOPFIX_LOAD_DIR) and `--loopfix-profile NAME` (LOOPFIX_PROFILE; default
the run's). Without a run directory Locust stops with one line and exit code 2. Locust's -u, -r
and -t, when given, win over the profile's figures (loadtests/shapes.py says how).

Users (weights from the scenario's [clients] table): PlayerUser (seed 002's player),
ClickStormUser (concurrent clicks, double-clicks), RefresherUser (reloads + the enqueue API);
one TwilioWebhookUser (signed callbacks at the arrival rate) and, when the scenario deletes
leads, one BulkDeleteUser. The shape is the profile (loadtests/shapes.py, default storm);
the profile `scenario` replaces the closed-loop users with one ScenarioArrivalsUser that opens
recordings at the scenario's rates, as the model does (for calibration).

When Locust quits, the `quitting` listener checks every invariant on the run directory's merged
history (the app's, every worker's and every Locust process's events) and sets the exit code:
0 every invariant holds, 1 one is broken or undecided. It also writes `locust-verdicts.json`.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import time

import gevent
from locust import events
from locust.runners import WorkerRunner

from loopfix.harness import invariants as inv
from loopfix.loadtests import deleters, players, shapes, webhooks
from loopfix.loadtests.load_context import LOAD_START_FILE, RUN_DIR_ENV, NoLoadRun, load_context, use_run_dir
from loopfix.loadtests.verdicts import check_run

PROFILE_ENV = "LOOPFIX_PROFILE"  # the fallback of --loopfix-profile


@events.init_command_line_parser.add_listener
def _loopfix_arguments(parser) -> None:
    """loopfix's options in Locust's own parser. Not in the web UI: the users and the shape are
    chosen from them when Locust imports this file, before a test is started there."""
    parser.add_argument("--loopfix-run-dir", metavar="DIR", default="", env_var=RUN_DIR_ENV, include_in_web_ui=False,
                        help="the load run directory (run.json, fixtures.json) from `loopfix stack up` or "
                             f"`loopfix loadtest`; env {RUN_DIR_ENV}")
    parser.add_argument("--loopfix-profile", metavar="NAME", default="", env_var=PROFILE_ENV, include_in_web_ui=False,
                        choices=["", *shapes.PROFILES],
                        help=f"storm profile: {' | '.join(shapes.PROFILES)} (default: the run's); env {PROFILE_ENV}")


def _loopfix_options():
    """loopfix's options, parsed now by Locust's own parser (its config files and environment
    included): Locust collects the User classes and the shape when it imports this file, before
    it parses its options, and both depend on the run directory."""
    from locust.argument_parser import get_parser

    options, _rest = get_parser().parse_known_args()
    return options


def _refuse(message: str) -> None:
    """One line, exit code 2 (bad input), no traceback."""
    sys.stderr.write(f"loopfix locustfile: {message}\n")
    raise SystemExit(2)


_options = _loopfix_options()
if _options.loopfix_run_dir:
    use_run_dir(_options.loopfix_run_dir)
try:
    _ctx = load_context()
except NoLoadRun as _exc:
    _refuse(str(_exc))
_clients = _ctx.scenario.clients
_weights = {
    players.ClickStormUser: _clients.storm_fraction + _clients.double_click_fraction,
    players.RefresherUser: _clients.refresh_fraction,
    players.PlayerUser: 1.0 - _clients.storm_fraction - _clients.double_click_fraction - _clients.refresh_fraction,
}
for _user_class, _share in _weights.items():
    _user_class.weight = max(1, round(100 * _share))
del _user_class  # Locust takes every User class in this module's namespace as one to run

_profile = _options.loopfix_profile or _ctx.info.get("profile", "storm")
if _profile not in shapes.PROFILES:
    _refuse(f"run.json names profile {_profile!r}; give --loopfix-profile {' | '.join(shapes.PROFILES)}")
_open_loop = _profile == "scenario"  # the scenario's arrival rates instead of closed-loop users
_target = _ctx.info.get("source") == "target"  # a service loopfix did not write, through its adapter
_conformance = _target and _ctx.scenario.conformance is not None  # its scripted plan instead of the mix
if _target:
    from loopfix.loadtests.target import conformance, users as target_users

    _as = {players.PlayerUser: target_users.TargetPlayerUser, players.ClickStormUser: target_users.TargetClickStormUser,
           players.RefresherUser: target_users.TargetRefresherUser,
           players.ScenarioArrivalsUser: target_users.TargetArrivalsUser,
           webhooks.TwilioWebhookUser: target_users.TargetWebhookUser, deleters.BulkDeleteUser: target_users.TargetDeleteUser}
else:
    _as = {}


def _user(cls, wanted: bool = True):
    return _as.get(cls, cls) if wanted and not _conformance else None


PlayerUser = _user(players.PlayerUser, _weights[players.PlayerUser] > 0 and not _open_loop)
ClickStormUser = _user(players.ClickStormUser, _weights[players.ClickStormUser] > 0 and not _open_loop)
RefresherUser = _user(players.RefresherUser, _weights[players.RefresherUser] > 0 and not _open_loop)
ScenarioArrivalsUser = _user(players.ScenarioArrivalsUser, _open_loop)
TwilioWebhookUser = _user(webhooks.TwilioWebhookUser)
_deletes = _ctx.scenario.bulk_delete.requests_per_hour > 0 and _ctx.scenario.bulk_delete.leads_per_business > 0
BulkDeleteUser = _user(deleters.BulkDeleteUser, _deletes)
ConformanceUser = conformance.ConformanceUser if _conformance else None
ProbeUser = target_users.ProbeUser if _target else None
FIXED_USERS = sum(1 for u in (TwilioWebhookUser, BulkDeleteUser, ConformanceUser, ProbeUser) if u is not None) \
    + int(_open_loop and not _conformance)

StormShape = None if _conformance else shapes.profile_shape(
    _profile,
    users=int(_ctx.info.get("users", _ctx.scenario.users)),
    fixed_users=FIXED_USERS,
    duration_s=_ctx.scenario.duration_s,
    drain_s=_ctx.scenario.drain_s,
    time_scale=_ctx.policy.time_scale,
)


@events.init.add_listener
def _shape_takes_common_options(environment, **_kwargs) -> None:
    """Locust's -u/-r/-t for the shape, read as given: headless, now (Locust fills in its
    defaults, 1 user at 1/s, only after this event); with the web UI, at every tick (its form
    writes them when a test starts). One line says what the shape runs with."""
    shape, options = environment.shape_class, environment.parsed_options
    if shape is None or options is None or isinstance(environment.runner, WorkerRunner):
        return
    shape.given = shapes.Given.of(options)
    if not options.headless:
        shape.live_options = options
    logging.getLogger("loopfix").log(logging.WARNING if shape.given != shapes.Given() else logging.INFO,
                                     shape.given.describe(_profile, int(_ctx.info.get("users", _ctx.scenario.users))))


@events.init.add_listener
def _quit_on_sigterm(environment, **_kwargs) -> None:
    """Locust installs its own SIGTERM handler only after a headless shape test has ended, so a
    SIGTERM during one would kill the process before the verdict: quit the runner instead."""
    if not isinstance(environment.runner, WorkerRunner):
        gevent.signal_handler(signal.SIGTERM, lambda: environment.runner.quit())


@events.test_start.add_listener
def _load_starts(environment, **_kwargs) -> None:
    """The scenario's clock starts with the load (in every Locust process)."""
    ctx = load_context()
    ctx.load_start = time.time()
    if not isinstance(environment.runner, WorkerRunner):
        tmp = ctx.run_dir / f".{LOAD_START_FILE}"
        tmp.write_text(repr(ctx.load_start), encoding="utf-8")
        tmp.replace(ctx.run_dir / LOAD_START_FILE)  # the runner never reads half a number


@events.quitting.add_listener
def _verdict(environment, **_kwargs) -> None:
    if _target:  # judged by its runner, after the probe, from outside the service
        environment.process_exit_code = 0
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or the only process) judges
    _history, verdicts = check_run(_ctx.run_dir)
    (_ctx.run_dir / "locust-verdicts.json").write_text(
        json.dumps([v.to_dict() for v in verdicts], indent=1) + "\n", encoding="utf-8")
    for v in verdicts:
        print(f"{inv.valid_label(v.valid):7} {v.name}")
    environment.process_exit_code = 0 if inv.overall(verdicts) is True else 1


if __name__ == "__main__":  # debugging one user: python loadtests/locustfile.py --loopfix-run-dir DIR
    from locust import run_single_user

    run_single_user(players.PlayerUser)
