"""reference_app/db.py's request side: RequestDb (a request's reads on a pooled DBAPI connection,
its ORM session opened only when asked for) and ReadConnections (the few kept checked out on
SQLite). On a real SQLite file; what must hold is what a route sees: a read after the session's
write sees it, a request holds one connection at a time, a kept connection carries nothing over."""
from __future__ import annotations

import secrets

import pytest

from loopfix.reference_app.auth import business_for_token
from loopfix.reference_app.db import ReadConnections, RequestDb, init_db, make_engine, make_sessionmaker
from loopfix.reference_app.models import Business


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    init_db(engine)
    yield engine
    engine.dispose()


def _business(token: str) -> Business:
    return Business(name="b", api_token=token, twilio_account_sid="AC" + secrets.token_hex(16),
                    twilio_auth_token=secrets.token_hex(16))


def test_a_read_after_the_session_wrote_sees_the_uncommitted_write(engine):
    db = RequestDb(ReadConnections(engine), make_sessionmaker(engine))
    assert business_for_token(db, "new") is None  # on the read connection: no session yet
    db.session.add(_business("new"))
    db.session.flush()
    try:
        assert business_for_token(db, "new") is not None  # through the session's transaction
    finally:
        db.close()
    again = RequestDb(ReadConnections(engine), make_sessionmaker(engine))
    assert business_for_token(again, "new") is None  # never committed: rolled back at close
    again.close()


def test_a_request_holds_one_connection_at_a_time_and_returns_it(engine):
    reads = ReadConnections(engine, keep=0)
    db = RequestDb(reads, make_sessionmaker(engine))
    business_for_token(db, "t")
    assert engine.pool.checkedout() == 1
    db.session.connection()  # the session begins: the read connection goes back first
    assert engine.pool.checkedout() == 1
    business_for_token(db, "t")
    assert engine.pool.checkedout() == 1
    db.close()
    assert engine.pool.checkedout() == 0


def test_sqlite_keeps_at_most_keep_connections_and_returns_the_others_to_the_pool(engine):
    reads = ReadConnections(engine, keep=2)
    held = [reads.checkout() for _ in range(3)]
    assert engine.pool.checkedout() == 3
    for conn in held:
        reads.checkin(conn)
    assert engine.pool.checkedout() == 2  # kept
    assert {id(reads.checkout()), id(reads.checkout())} == {id(held[0]), id(held[1])}


def test_a_kept_connection_comes_back_with_its_transaction_rolled_back(engine):
    reads = ReadConnections(engine, keep=1)
    conn = reads.checkout()
    cursor = conn.cursor()
    cursor.execute("INSERT INTO business (name, api_token, twilio_account_sid, twilio_auth_token) "
                   "VALUES ('b', 'left-open', 'AC1', 'x')")  # sqlite3 begins a transaction here
    cursor.close()
    assert conn.dbapi_connection.in_transaction
    reads.checkin(conn)
    again = reads.checkout()
    assert again is conn and not again.dbapi_connection.in_transaction
    assert business_for_token(RequestDb(reads, make_sessionmaker(engine)), "left-open") is None


def test_only_sqlite_connections_are_kept():
    from sqlalchemy import create_engine

    reads = ReadConnections(create_engine("postgresql+psycopg://u@127.0.0.1:1/none"), keep=2)

    class Conn:
        closed = False

        def close(self):
            self.closed = True

    conn = Conn()
    reads.checkin(conn)  # a PostgreSQL checkout pings first (pool_pre_ping): none kept
    assert conn.closed
