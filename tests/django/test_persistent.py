"""The persistent default under real servers: uvicorn (ASGI) closes each request's connections,
gunicorn (WSGI) keeps one per thread, health-checked after a suspend and a dropped client.

Each test serves ``tests/django/persistent_site.py`` in a subprocess on the session stand-in and
counts its client connections at PgBouncer (``SHOW CLIENTS``, by ``application_name``) and the
connects Django made (``connection_created``, reported by the view).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.helpers import start_python

pytestmark = pytest.mark.integration

REQUESTS = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Site:
    def __init__(self, neon_local: Any, app: str, port: int) -> None:
        self.neon_local, self.app, self.url = neon_local, app, f"http://127.0.0.1:{port}/"

    def get(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {}

    def connects(self) -> int:
        status, body = self.get()
        assert status == 200
        return int(body["connects"])

    def clients(self) -> list[dict[str, Any]]:
        """This site's client connections open at PgBouncer."""
        return [c for c in self.neon_local.show("CLIENTS") if c["application_name"] == self.app]

    def settled_clients(self, expected: int) -> int:
        """The count of open clients once it reaches ``expected`` (a response is sent before
        Django's ``request_finished``), or whatever it is after 5 s."""
        deadline = time.monotonic() + 5
        while len(self.clients()) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.clients())


@contextmanager
def serve(
    neon_local: Any, server: str, app: str, *, neon_django_app: bool = True, **config: Any
) -> Iterator[Site]:
    port = _free_port()
    if server == "asgi":
        args = ["-m", "uvicorn", "tests.django.persistent_site:asgi", "--port", str(port)]
        args += ["--lifespan", "off", "--log-level", "warning"]
    else:  # gunicorn's threaded worker, one thread: one kept connection
        args = ["-m", "gunicorn", "tests.django.persistent_site:wsgi", "-b", f"127.0.0.1:{port}"]
        args += ["-k", "gthread", "-w", "1", "--threads", "1", "--no-control-socket"]
    spec = {"app": app, "neon_django_app": neon_django_app, "config": config}
    proc = start_python(
        *args,
        env={
            "NEON_TESTS_STANDIN": json.dumps(neon_local.env()),
            "PERSISTENT_SITE": json.dumps(spec),
        },
    )
    site = Site(neon_local, app, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{server} did not start: {proc.communicate()[1][-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield site
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _drop_client(neon_local: Any, site: Site) -> None:
    """What a pooler restart (or a suspend on Neon, whose pooler runs with the compute) does to a
    kept connection: PgBouncer closes the client. ``KILL_CLIENT`` needs PgBouncer >= 1.23."""
    (client,) = site.clients()
    version = tuple(int(part) for part in neon_local.pgbouncer_version.split(".")[:2])
    with neon_local.admin() as admin:
        if version >= (1, 23):
            admin.execute(f"KILL_CLIENT {client['id']}")
        else:
            admin.execute(f"KILL {client['database']}")
            admin.execute(f"RESUME {client['database']}")


def test_asgi_closes_each_requests_connection(neon_local):
    with serve(neon_local, "asgi", "persistent_asgi") as site:
        connects = [site.connects() for _ in range(REQUESTS)]
        assert connects == list(range(1, REQUESTS + 1))  # a new context per request: no reuse
        assert site.settled_clients(0) == 0


def test_control_asgi_without_the_receiver_leaves_every_connection_open(neon_local):
    """Stock Django with the same persistent settings (neon_django not installed, so no
    receiver): each request's connection stays open at PgBouncer until garbage collection."""
    with serve(neon_local, "asgi", "persistent_asgi_ctl", neon_django_app=False) as site:
        connects = [site.connects() for _ in range(REQUESTS)]
        assert connects == list(range(1, REQUESTS + 1))
        assert site.settled_clients(REQUESTS) == REQUESTS


def test_wsgi_keeps_one_connection_across_requests_and_suspends(neon_local):
    with serve(neon_local, "wsgi", "persistent_wsgi") as site:
        assert [site.connects() for _ in range(REQUESTS)] == [1] * REQUESTS
        assert len(site.clients()) == 1
        assert neon_local.faults.suspend() >= 1  # the pooler's server connections are cut
        assert site.connects() == 1  # PgBouncer reconnects its side; the client is kept
        _drop_client(neon_local, site)
        assert site.connects() == 2  # the health check saw it dead; one new connect
        assert [site.connects() for _ in range(3)] == [2, 2, 2]


def test_wsgi_without_health_checks_still_replaces_a_dropped_client(neon_local):
    """The liveness check sends nothing, so it runs without CONN_HEALTH_CHECKS too. (Django's
    own check, the control, reuses the dead connection: tests/resilience/test_worker_loops.py.)"""
    with serve(neon_local, "wsgi", "persistent_wsgi_ctl", conn_health_checks=False) as site:
        assert site.connects() == 1
        _drop_client(neon_local, site)
        assert site.get()[0] == 200  # replaced before the request's first statement
        assert site.connects() == 2


def test_control_wsgi_with_conn_max_age_0_connects_per_request(neon_local):
    with serve(neon_local, "wsgi", "per_request_wsgi", conn_max_age=0) as site:
        assert [site.connects() for _ in range(REQUESTS)] == list(range(1, REQUESTS + 1))
        assert site.settled_clients(0) == 0
