"""Configuration read from the environment, with defaults for a laptop and a `TestConfig`.

Every setting is an environment variable (and a CLI flag where it fits): REDIS_URL,
DATABASE_URL, LOOPFIX_MEDIA_HOSTS, LOOPFIX_TIME_SCALE, LOOPFIX_VARIANT, LOOPFIX_FAULTS,
LOOPFIX_POLICY (comma-separated NAME=VALUE overrides; list values continue after commas,
lock TTLs as `lock_ttl_s=delete_leads_bulk:2,default:5`), LOOPFIX_DATA_DIR, LOOPFIX_HISTORY_DIR,
LOOPFIX_RUN_EPOCH (wall seconds that histories count from), LOOPFIX_MAX_BODY_BYTES (request
bodies larger are refused 413 before they are read), LOOPFIX_SENDFILE (`X-Accel-Redirect` behind
nginx, `X-Sendfile` behind Apache/lighttpd: the proxy sends recordings, the app only names them;
empty: the app sends them with sendfile) and LOOPFIX_ACCEL_PREFIX (nginx's internal location
for the recordings folder, default /_recordings/). Invalid values raise ValueError with what to
fix; the CLI turns that into a one-line message.

Paths (the data dir, the history dir, a SQLite DATABASE_URL's file) are made absolute against the
working directory once, when the Config is built: the process that built it, every process it
exports `to_env()` to and Flask's `send_file` (which resolves a relative path against the app's
package, not the working directory) then all name the same files. The by-hand stack started from
one directory, or `serve` and `worker` started from two with paths relative to each, plays.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from loopfix.reference_app.policy import Policy, make_policy


SENDFILE_HEADERS = ("", "X-Accel-Redirect", "X-Sendfile")  # "": the app sends recordings itself

# LOOPFIX_POLICY's syntax: NAME=VALUE items separated by commas (the CLI's `--set` takes the same);
# make_policy (reference_app.policy.settings) turns the values into a Policy.


def format_policy_value(value: object) -> str:
    """A Policy constant as `VALUE` in LOOPFIX_POLICY's `NAME=VALUE`: the inverse of make_policy's
    parsing (tuples comma-joined, lock TTLs as `op:seconds`)."""
    if isinstance(value, tuple):
        return ",".join(f"{v[0]}:{v[1]:g}" if isinstance(v, tuple) else f"{v:g}" for v in value)
    return str(value)


def split_assignments(text: str) -> list[str]:
    """LOOPFIX_POLICY's `'a=1,slot_defer_s=2,5,10,b=x'` → `['a=1', 'slot_defer_s=2,5,10', 'b=x']`:
    an item without `=` continues the previous value (a list-valued constant)."""
    items: list[str] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part and items:
            items[-1] += "," + part.strip()
        else:
            items.append(part.strip())
    return items


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """`['max_retries=6']` → {'max_retries': '6'}; a malformed item raises ValueError."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def absolute_path(path: str | os.PathLike) -> Path:
    """`path` against the working directory, normalised (`a/../b` → `b`); symlinks kept."""
    return Path(os.path.abspath(os.fspath(path)))


def absolute_database_url(url: str) -> str:
    """A SQLite URL's relative file made absolute (`sqlite:///data/x.db` → `sqlite:////cwd/data/x.db`);
    in-memory and `file:` URI databases and every other kind of URL unchanged."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url  # only for SQLite URLs: config.py stays light to import

    parsed = make_url(url)
    name = parsed.database or ""
    if not name or name == ":memory:" or name.startswith("file:") or posixpath.isabs(name):
        return url
    return parsed.set(database=str(absolute_path(name))).render_as_string(hide_password=False)


@dataclass(frozen=True)
class Config:
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = ""  # empty: SQLite in data_dir
    media_hosts: tuple[str, ...] = ("api.twilio.com",)
    data_dir: Path = Path("data")
    history_dir: Path | None = None
    run_epoch: float = 0.0
    public_url: str = ""  # scheme://host[:port] Twilio calls us on, when behind a proxy
    # The largest request body read: a bulk delete of BULK_DELETE_MAX_IDS (10,000) ten-digit ids
    # is ~120 kB of JSON, a Twilio webhook ~1 kB; 1 MiB leaves room and refuses a 50 MB body.
    max_body_bytes: int = 1 << 20
    sendfile_header: str = ""  # "" | "X-Accel-Redirect" | "X-Sendfile": who sends the recordings
    accel_prefix: str = "/_recordings/"  # X-Accel-Redirect: nginx's internal location of recordings_dir
    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        # Once, when built (also by `replace`): see the module docstring. Frozen, hence setattr.
        object.__setattr__(self, "data_dir", absolute_path(self.data_dir))
        if self.history_dir is not None:
            object.__setattr__(self, "history_dir", absolute_path(self.history_dir))
        object.__setattr__(self, "database_url", absolute_database_url(self.database_url))
        if self.sendfile_header not in SENDFILE_HEADERS:
            raise ValueError(f"LOOPFIX_SENDFILE must be one of {', '.join(repr(h) for h in SENDFILE_HEADERS)}, "
                             f"not {self.sendfile_header!r}")
        if self.max_body_bytes < 1:
            raise ValueError("LOOPFIX_MAX_BODY_BYTES must be a positive number of bytes")
        if not self.accel_prefix.startswith("/"):
            raise ValueError(f"LOOPFIX_ACCEL_PREFIX must be a path starting with /, not {self.accel_prefix!r}")

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'loopfix.db'}"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Config":
        env = os.environ if env is None else env
        policy = make_policy(
            variant=env.get("LOOPFIX_VARIANT", "fixed") or "fixed",
            faults=env.get("LOOPFIX_FAULTS", ""),
            time_scale=env.get("LOOPFIX_TIME_SCALE", "1.0") or "1.0",
            overrides=parse_assignments(split_assignments(env.get("LOOPFIX_POLICY", ""))),
        )
        try:
            epoch = float(env.get("LOOPFIX_RUN_EPOCH", "0") or 0)
        except ValueError:
            raise ValueError("LOOPFIX_RUN_EPOCH must be a number of seconds") from None
        try:
            max_body = int(env.get("LOOPFIX_MAX_BODY_BYTES", "") or cls.max_body_bytes)
        except ValueError:
            raise ValueError("LOOPFIX_MAX_BODY_BYTES must be a whole number of bytes") from None
        hosts = tuple(h.strip() for h in env.get("LOOPFIX_MEDIA_HOSTS", "api.twilio.com").split(",") if h.strip())
        cfg = cls(
            redis_url=env.get("REDIS_URL", cls.redis_url) or cls.redis_url,
            database_url=env.get("DATABASE_URL", ""),
            media_hosts=hosts,
            data_dir=Path(env.get("LOOPFIX_DATA_DIR", "data") or "data"),
            history_dir=Path(env["LOOPFIX_HISTORY_DIR"]) if env.get("LOOPFIX_HISTORY_DIR") else None,
            run_epoch=epoch,
            public_url=env.get("LOOPFIX_PUBLIC_URL", ""),
            max_body_bytes=max_body,
            sendfile_header=env.get("LOOPFIX_SENDFILE", ""),
            accel_prefix=env.get("LOOPFIX_ACCEL_PREFIX", "") or cls.accel_prefix,
            policy=policy,
        )
        return replace(cfg, **overrides) if overrides else cfg

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild this config in another process."""
        p = self.policy
        env = {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "LOOPFIX_MEDIA_HOSTS": ",".join(self.media_hosts),
            "LOOPFIX_DATA_DIR": str(self.data_dir),
            "LOOPFIX_RUN_EPOCH": repr(self.run_epoch),
            "LOOPFIX_TIME_SCALE": repr(p.time_scale),
            "LOOPFIX_VARIANT": p.variant,
            "LOOPFIX_FAULTS": ",".join(sorted(p.extra_faults)),
            "LOOPFIX_PUBLIC_URL": self.public_url,
            "LOOPFIX_MAX_BODY_BYTES": str(self.max_body_bytes),
            "LOOPFIX_SENDFILE": self.sendfile_header,
            "LOOPFIX_ACCEL_PREFIX": self.accel_prefix,
        }
        if self.history_dir:
            env["LOOPFIX_HISTORY_DIR"] = str(self.history_dir)
        defaults = Policy(variant=p.variant, time_scale=p.time_scale, extra_faults=p.extra_faults)
        changed = [
            f"{name}={format_policy_value(v)}"
            for name, v in vars(p).items()
            if name not in ("variant", "time_scale", "extra_faults", "faults") and getattr(defaults, name) != v
        ]
        env["LOOPFIX_POLICY"] = ",".join(changed)
        return env
