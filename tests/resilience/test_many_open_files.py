"""The liveness check in a process with many open files.

A server process with many sockets or files open hands its new connections descriptors from
1024 up. ``select()`` refuses those (``FD_SETSIZE``), and the check read that refusal as a dead
connection: every kept connection was replaced at each use, every ``direct()`` use reported
an ended session, and every psycopg 3 ``COMMIT`` raised ``CommitNotSent`` without being sent.
The check asks with ``poll()`` now, which has no such limit.
"""

from __future__ import annotations

import os
import resource
import select
import socket
from collections.abc import Iterator

import psycopg
import psycopg2
import pytest
import sqlalchemy as sa

import neon_connect
import neon_sqlalchemy
from neon_connect import _liveness as liveness_module
from neon_connect._liveness import ALIVE, DEAD, liveness

pytestmark = pytest.mark.integration

_HIGH = 1100
"""Past ``FD_SETSIZE`` (1024), where ``select()`` stops."""


@pytest.fixture
def many_open_files() -> Iterator[None]:
    """Hold enough descriptors open that the next connection's socket is numbered past 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = _HIGH + 50
    if soft < needed:
        assert hard == resource.RLIM_INFINITY or hard >= needed, f"RLIMIT_NOFILE hard {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    held = []
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        while (fd := os.dup(devnull)) < _HIGH:
            held.append(fd)
        held.append(fd)
        yield
    finally:
        for fd in [*held, devnull]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _select_readable(fd: int) -> bool:
    """The check as it was."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def test_a_live_psycopg_connection_past_1024_reads_alive(neon_local, many_open_files):
    with psycopg.connect(neon_local.pooled_url) as conn:
        conn.execute("SELECT 1").fetchone()
        conn.rollback()
        assert conn.pgconn.socket >= 1024
        assert liveness(conn) is ALIVE
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        assert liveness(conn) is DEAD  # and a dead one still reads dead


def test_a_live_psycopg2_connection_past_1024_reads_alive(neon_local, many_open_files):
    conn = psycopg2.connect(neon_local.pooled_url)
    try:
        assert conn.fileno() >= 1024
        assert liveness(conn) is ALIVE
    finally:
        conn.close()


def test_a_commit_past_1024_is_sent_and_stored(neon_local, many_open_files):
    with psycopg.connect(neon_local.direct_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE IF NOT EXISTS many_files (n int)")
        owner.execute("TRUNCATE many_files")
    with psycopg.connect(neon_local.pooled_url) as conn:
        assert conn.pgconn.socket >= 1024
        conn.execute("INSERT INTO many_files VALUES (1)")
        neon_connect.commit(conn)  # raised CommitNotSent, nothing sent
    with psycopg.connect(neon_local.direct_url) as check:
        assert check.execute("SELECT count(*) FROM many_files").fetchone() == (1,)


def test_a_kept_sqlalchemy_connection_past_1024_is_reused(neon_local, many_open_files):
    engine = neon_sqlalchemy.create_engine(
        neon_local.pooled_url, direct_url=neon_local.direct_url, direct=True
    )
    try:
        pids = set()
        for _ in range(3):
            with engine.connect() as conn:
                pids.add(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
        assert len(pids) == 1  # one connection, kept: not replaced at each checkout
    finally:
        engine.dispose()


def test_control_with_select_a_live_connection_past_1024_read_dead(
    neon_local, many_open_files, monkeypatch
):
    monkeypatch.setattr(liveness_module, "_readable", _select_readable)
    with psycopg.connect(neon_local.pooled_url) as conn:
        conn.execute("SELECT 1").fetchone()
        conn.rollback()
        assert liveness(conn) is DEAD
        conn.execute("SELECT 1")
        with pytest.raises(neon_connect.CommitNotSent):
            neon_connect.commit(conn)
