"""Engine and sessions: SQLite (WAL, busy timeout) by default, PostgreSQL via DATABASE_URL; the
schema created at start by every process, safely when several start at once; a request's
database (`RequestDb`: reads on a pooled connection, the ORM session only when a route needs it)."""
from __future__ import annotations

import sqlite3
import time

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from loopfix.reference_app.models import Base


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets readers and one writer overlap
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _journal_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


WAL_DEADLINE_S = 30.0  # wall seconds a process waits for the others to let it switch a fresh file to WAL


def _journal_wal(cur) -> None:
    """PRAGMA journal_mode=WAL, retried while the file is locked: switching a fresh database's
    journal needs it alone, and processes started together (serve and worker) open it at once —
    SQLite answers "database is locked" at once there, without waiting out busy_timeout."""
    deadline, pause = time.monotonic() + WAL_DEADLINE_S, 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def init_db(engine: Engine) -> None:
    """Create the tables and indexes that are missing. Processes started together on a fresh
    database (`serve` and `worker` from one Procfile) all do this: create_all checks first, but
    between one process's check and its CREATE another can create the table, and the CREATE fails
    ("table ... already exists"; PostgreSQL: a unique violation on pg_type). The process that lost
    checks again and creates what is still missing. Each lost race means another process created
    one more object, so there are at most as many retries as objects."""
    attempts = 1 + sum(1 + len(table.indexes) for table in Base.metadata.tables.values())
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except DBAPIError as exc:
            if attempt == attempts - 1 or not lost_creation_race(exc):
                raise


def lost_creation_race(exc: DBAPIError) -> bool:
    """Did a CREATE fail because another process created the same object first?"""
    message = str(exc.orig).lower()
    return "already exists" in message or "pg_type_typname_nsp_index" in message


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class RequestDb:
    """One web request's database. The hot path's SELECTs (compiled_select) run on a DBAPI
    connection from the pool (`read_connection`), checked out on first use; the ORM session
    (`session`) is opened only when a route asks for it (writes, ORM queries), and from then on
    the reads go through it too (same transaction: they see its writes), its read connection
    returned first so a request holds at most one. `close()` returns both.

    Why: a poll that only reads (the 200 and 202 paths) would pay the Session's creation, first
    use (`Session.connection`: pool checkout, begin, events) and close, ~70 µs on SQLite,
    against ~11 µs for a pooled connection."""

    __slots__ = ("_engine", "_sessions", "_dbapi", "_session")

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self._engine, self._sessions, self._dbapi, self._session = engine, sessions, None, None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._release_reads()
            self._session = self._sessions()
        return self._session

    def read_connection(self):
        """(DBAPI connection, dialect) for a read: the session's once it is open, else the pooled one."""
        if self._session is not None:
            conn = self._session.connection()
            return conn.connection, conn.dialect
        if self._dbapi is None:
            self._dbapi = self._engine.raw_connection()
        return self._dbapi, self._engine.dialect

    def _release_reads(self) -> None:
        if self._dbapi is not None:
            dbapi, self._dbapi = self._dbapi, None
            dbapi.close()  # back to the pool, rolled back

    def close(self) -> None:
        try:
            self._release_reads()
        finally:
            if self._session is not None:
                self._session.close()


def session_of(db: Session | RequestDb) -> Session:
    """The ORM session of `db` (a Session, or a RequestDb: opened now if it was not)."""
    return db.session if type(db) is RequestDb else db
