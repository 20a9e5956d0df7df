"""A process that keeps a Neon connection and receives SIGTERM, as a platform stops it
(tests/test_sigterm.py). ``python -m tests.sigterm_child STACK SCENARIO CLOSE_ON_SIGTERM``:

- STACK: ``django``, ``sqlalchemy`` or ``asyncio`` (an async SQLAlchemy engine);
- SCENARIO: ``idle`` (the connection sits kept when the signal comes), ``busy`` (a
  transaction is open: it goes on and commits, then the request ends), or ``default`` (no
  server handler: SIGTERM ends the process);
- CLOSE_ON_SIGTERM: ``auto``, ``true`` or ``false``.

The stand-in's variables come from the environment. Except under ``default``, a server's
graceful handler is installed first, as gunicorn's and uvicorn's are before the app loads:
it lets the process finish its work. The child prints ``port N`` (its side of the
connection), ``ready``, then after the signal ``term``, and lines the test reads; at the end
it waits for a line on stdin, so its exit cannot close anything before the test looks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

GRACE = 30.0
"""How long the graceful phase may last: the test ends the child before."""


def _port(fd: int) -> int:
    sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a copy of the fd
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def _open_in(pool: Any) -> int:
    """The pool's checked-in entries whose driver connection is still open."""
    records = []
    while not pool._pool.empty():
        records.append(pool._pool.get(False))
    for record in records:
        pool._pool.put(record, False)
    return sum(record.dbapi_connection is not None for record in records)


def say(line: str) -> None:
    print(line, flush=True)


def graceful() -> threading.Event:
    """A server's handler: note the signal, let the work go on."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    return stop


def wait(stop: threading.Event | None) -> None:
    if stop is None:  # SIG_DFL behind ours: the signal ends the process
        time.sleep(GRACE)
        say("still alive")
        return
    stop.wait(GRACE)
    say("term")


def django_child(scenario: str, close: Any) -> None:
    import django
    from django.conf import settings
    from django.db import close_old_connections, connection, transaction

    stop = None if scenario == "default" else graceful()
    import neon_django
    from tests.driver import choose_django_driver

    choose_django_driver()  # psycopg2 in the matrix's psycopg2 session

    settings.configure(
        DATABASES={"default": neon_django.config(close_on_sigterm=close)},
        INSTALLED_APPS=["neon_django"],
        USE_TZ=True,
    )
    django.setup()
    close_old_connections()  # a request starts
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS sigterm_rows (tag text)")
    say(f"port {_port(connection.connection.fileno())}")
    if scenario != "busy":
        close_old_connections()  # the request ends: the connection is kept
        say("ready")
        wait(stop)
        say(f"open {connection.connection is not None}")
        return
    tag = os.environ["SIGTERM_TAG"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO sigterm_rows VALUES (%s)", [tag])
        say("ready")
        wait(stop)
        with connection.cursor() as cursor:  # the same transaction goes on after the signal
            cursor.execute("INSERT INTO sigterm_rows VALUES (%s)", [tag])
    say(f"open {connection.connection is not None}")  # committed, the request not ended
    close_old_connections()  # the request ends
    say(f"released {connection.connection is not None}")


def sqlalchemy_child(scenario: str, close: Any) -> None:
    from sqlalchemy import text

    stop = None if scenario == "default" else graceful()
    import neon_sqlalchemy

    engine = neon_sqlalchemy.create_engine(allow_client_pool=True, close_on_sigterm=close)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS sigterm_rows (tag text)"))
        say(f"port {_port(conn.connection.driver_connection.fileno())}")
    if scenario != "busy":
        say("ready")
        wait(stop)
        say(f"open {_open_in(engine.pool)}")
        return
    tag = os.environ["SIGTERM_TAG"]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sigterm_rows VALUES (:tag)"), {"tag": tag})
        say("ready")
        wait(stop)
        conn.execute(text("INSERT INTO sigterm_rows VALUES (:tag)"), {"tag": tag})
        driver = conn.connection.driver_connection
        say(f"open {not driver.closed}")
    say(f"released {not driver.closed}")  # committed and checked in


async def asyncio_child(scenario: str, close: Any) -> Any:
    from sqlalchemy import text

    import neon_sqlalchemy

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # uvicorn's way
    engine = neon_sqlalchemy.create_async_engine(allow_client_pool=True, close_on_sigterm=close)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        raw = await conn.get_raw_connection()
        say(f"port {_port(raw.driver_connection.fileno())}")
    say("ready")
    await asyncio.wait_for(stop.wait(), GRACE)
    say("term")
    await asyncio.sleep(0.5)  # the loop runs on, as in a graceful shutdown
    say(f"open {_open_in(engine.sync_engine.pool)}")
    return engine  # kept alive by the caller: its collection would close the connection


def main() -> None:
    stack, scenario, close_arg = sys.argv[1:4]
    close: Any = {"true": True, "false": False}.get(close_arg, close_arg)
    kept = None
    if stack == "django":
        django_child(scenario, close)
    elif stack == "sqlalchemy":
        sqlalchemy_child(scenario, close)
    else:
        kept = asyncio.run(asyncio_child(scenario, close))
    say("done")
    sys.stdin.readline()  # hold the connections' fate still until the test has looked
    del kept


if __name__ == "__main__":
    main()
