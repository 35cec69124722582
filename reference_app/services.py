"""The per-process services the routes and jobs share: config, policy, Redis, database, queues,
history writer, clock. Built once per process from `Config` (`get_services()` for RQ jobs,
which run outside Flask; `create_app` for the web process).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property

import redis
from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from loopfix.reference_app.config import Config
from loopfix.reference_app.coordination import Coordinator
from loopfix.reference_app.db import ReadConnections, init_db, make_engine, make_sessionmaker
from loopfix.reference_app.events import HistoryWriter
from loopfix.reference_app.policy import Policy

RECORDINGS_QUEUE = "recordings"
LEADS_QUEUE = "leads"
QUEUES = (RECORDINGS_QUEUE, LEADS_QUEUE)


def connect_redis(url: str) -> redis.Redis:
    """A client that fails fast (sub-second) instead of hanging when Redis is paused or gone.
    `fakeredis://` gives an in-process server (the embedded fallback, unit tests)."""
    if url.startswith("fakeredis://"):
        import fakeredis

        return fakeredis.FakeRedis(server=_FAKE_SERVERS.setdefault(url, fakeredis.FakeServer()))
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=0.8, health_check_interval=10, retry_on_timeout=False
    )


_FAKE_SERVERS: dict = {}


@dataclass
class Services:
    config: Config

    @property
    def policy(self) -> Policy:
        return self.config.policy

    @cached_property
    def redis(self) -> redis.Redis:
        return connect_redis(self.config.redis_url)

    @cached_property
    def coord(self) -> Coordinator:
        return Coordinator(self.redis, self.policy)

    @cached_property
    def engine(self):
        if not self.config.database_url:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.config.sqlalchemy_url)
        init_db(engine)
        return engine

    @cached_property
    def reads(self) -> ReadConnections:
        """The web requests' read connections (db.RequestDb)."""
        return ReadConnections(self.engine)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def history(self) -> HistoryWriter:
        return HistoryWriter(self.config.history_dir, proc=_proc_name(), time_scale=self.policy.time_scale,
                             epoch=self.config.run_epoch)

    def queue(self, name: str = RECORDINGS_QUEUE) -> Queue:
        return Queue(name, connection=self.redis)

    @staticmethod
    def wall_now() -> float:
        return time.time()

    def policy_time(self, wall: float | None) -> float | None:
        """Wall epoch seconds → policy seconds since the run's epoch (None stays None)."""
        if wall is None:
            return None
        return (wall - self.config.run_epoch) / self.policy.time_scale

    def policy_now(self) -> float:
        return self.policy_time(time.time())


def _proc_name() -> str:
    return os.environ.get("LOOPFIX_PROC", "proc")


_services: Services | None = None
_services_pid: int | None = None


def get_services() -> Services:
    """This process's services, built from the environment on first use (and after a fork,
    so a forked work horse never shares a parent's sockets)."""
    global _services, _services_pid
    if _services is None or _services_pid != os.getpid():
        previous = _services
        _services = Services(Config.from_env()) if previous is None else Services(previous.config)
        _services_pid = os.getpid()
    return _services


def set_services(services: Services) -> None:
    """Install `services` for this process (the app factory and tests do this)."""
    global _services, _services_pid
    _services, _services_pid = services, os.getpid()
