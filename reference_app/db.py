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


class ReadConnections:
    """The DBAPI connections web requests read on (RequestDb), for one engine: the pool's, up to
    `keep` of them kept checked out between requests on SQLite, rolled back as the pool's reset
    would (nothing left open).

    Why: a pool checkout and checkin (QueuePool's locks, the connection record, the reset) is
    ~9 µs in-process and ~40 µs of a 200 poll's CPU under gunicorn (measured: 537 -> 496 µs), as
    much as the poll's SQL. Only on SQLite, which has no server to drop a connection: a
    PostgreSQL checkout pings it first (pool_pre_ping), a kept one would skip that. Few: kept,
    they are out of the pool, whose size also bounds the sessions; a request that only reads
    holds one without yielding to another greenlet, so a gevent worker rarely needs two."""

    KEEP = 2

    def __init__(self, engine: Engine, keep: int = KEEP) -> None:
        self.engine, self.dialect = engine, engine.dialect
        self._keep = keep if engine.dialect.name == "sqlite" else 0
        self._idle: list = []

    def checkout(self):
        try:
            return self._idle.pop()  # atomic: threads (gthread) and greenlets share the list
        except IndexError:
            return self.engine.raw_connection()

    def checkin(self, conn) -> None:
        if len(self._idle) >= self._keep:
            conn.close()  # back to the pool, rolled back
            return
        try:
            conn.dbapi_connection.rollback()
        except Exception:
            conn.invalidate()  # closed and dropped from the pool
            return
        self._idle.append(conn)


class RequestDb:
    """One web request's database. The hot path's SELECTs (compiled_select) run on a DBAPI
    connection (`read_connection`, from ReadConnections), taken on first use; the ORM session
    (`session`) is opened only when a route asks for it (writes, ORM queries), and from then on
    the reads go through it too (same transaction: they see its writes), its read connection
    returned first so a request holds at most one. `close()` returns both.

    Why: a poll that only reads (the 200 and 202 paths) would pay the Session's creation, first
    use (`Session.connection`: pool checkout, begin, events) and close, ~70 µs on SQLite,
    against ~11 µs for a pooled connection."""

    __slots__ = ("_reads", "_sessions", "_dbapi", "_session")

    def __init__(self, reads: ReadConnections, sessions: sessionmaker[Session]) -> None:
        self._reads, self._sessions, self._dbapi, self._session = reads, sessions, None, None

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
            self._dbapi = self._reads.checkout()
        return self._dbapi, self._reads.dialect

    def _release_reads(self) -> None:
        if self._dbapi is not None:
            dbapi, self._dbapi = self._dbapi, None
            self._reads.checkin(dbapi)

    def close(self) -> None:
        try:
            self._release_reads()
        finally:
            if self._session is not None:
                self._session.close()


def session_of(db: Session | RequestDb) -> Session:
    """The ORM session of `db` (a Session, or a RequestDb: opened now if it was not)."""
    return db.session if type(db) is RequestDb else db
