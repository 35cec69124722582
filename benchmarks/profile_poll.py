"""Profile the poll endpoint under load (py-spy on gunicorn's workers while wrk polls), so the
app's hot path is optimised from evidence: `python -m loopfix.benchmarks.profile_poll [--state queued]`.

Prints the functions with the most inclusive and self samples from the collapsed stacks
and keeps the raw profile (flame-graph input) at --out.
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from loopfix.benchmarks import app_bench, poll_targets
from loopfix.loadtests.stack import Stack
from loopfix.reference_app.config import Config
from loopfix.reference_app.services import Services


def summarise(collapsed: Path, top: int = 25) -> str:
    """Inclusive and self sample shares per function from py-spy's collapsed (raw) output."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 2)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")[1:]]  # drop the process frame
        if not frames:
            continue
        total += int(n)
        for f in set(frames):
            inclusive[f] += int(n)
        own[frames[-1]] += int(n)
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["self:"] + [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", default="queued", choices=poll_targets.STATES)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("poll-profile.txt"))
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy not on PATH: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="loopfix-profile-"))
    stack = Stack(work, Config(data_dir=work / "data"))
    try:
        stack.start_redis()
        svc = Services(stack.config)
        business_id, token = poll_targets.add_business(svc)
        call = poll_targets.add_call(svc, business_id, args.state)
        svc.coord.worker_beat()
        url, pid = app_bench.serve(stack, "app", "loopfix.reference_app.wsgi:app", "/healthz")
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--gil", "--format", "raw",
                                "--rate", "200", "--duration", str(args.seconds), "--output", str(args.out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = threading.Thread(target=app_bench.wrk, args=(f"{url}/api/recordings/file/{call}", args.seconds, pid,
                                                             {"Authorization": f"Bearer {token}"}))
        load.start()
        load.join()
        spy.wait()
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(summarise(args.out))


if __name__ == "__main__":
    main()
