"""``make demo``: both example projects, end to end, with a report read from the servers.

With no ``DATABASE_URL`` set it brings up the local stand-in (PostgreSQL + PgBouncer in
transaction mode, behind its Neon-like proxy, as ``neon-local up`` exports it), runs both projects' migrations, serves a burst of concurrent requests
through gunicorn (WSGI, Django) and uvicorn (ASGI, SQLAlchemy), runs the LISTEN/NOTIFY
worker, prints which endpoint served each step and brings everything down again. With
``DATABASE_URL`` set (a real Neon string) it uses that and starts nothing; PgBouncer's own
counters are then not readable, and the evidence comes from PostgreSQL alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DJANGO_APP = HERE / "django_app"
SQLALCHEMY_APP = HERE / "sqlalchemy_app"


@dataclass
class Target:
    """Where the demo runs, and the handles it reads the servers' own counters through."""

    env: dict[str, str]
    admin_url: str | None = None  # PgBouncer's admin console (the stand-in only)
    database: str = "neondb"

    def pooler(self, what: str) -> list[dict[str, Any]]:
        import psycopg

        if self.admin_url is None:
            return []
        with psycopg.connect(self.admin_url, autocommit=True) as admin, admin.cursor() as cur:
            cur.execute(f"SHOW {what}")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pooler_xacts(self) -> int | None:
        if self.admin_url is None:
            return None
        return sum(
            int(r["total_xact_count"])
            for r in self.pooler("STATS")
            if r["database"] == self.database
        )

    @contextlib.contextmanager
    def sampler(self) -> Iterator[Callable[[], dict[str, int]]]:
        """Read client/server/backend counts over two held connections (no reconnect per sample)."""
        import psycopg

        import neon_connect

        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(
                neon_connect.connect(
                    self.env.get("DATABASE_URL_UNPOOLED") or None, direct=True, autocommit=True
                )
            )
            admin = (
                stack.enter_context(psycopg.connect(self.admin_url, autocommit=True))
                if self.admin_url
                else None
            )

            def read() -> dict[str, int]:
                counts = {
                    "backends": pg.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        "AND datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchone()[0]  # type: ignore[index]
                }
                if admin is not None:
                    for what in ("CLIENTS", "SERVERS"):
                        cur = admin.execute(f"SHOW {what}")
                        names = [d.name for d in cur.description or []]
                        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
                        counts[what.lower()] = sum(
                            1 for r in rows if r["database"] == self.database
                        )
                return counts

            yield read

    def backends(self) -> list[dict[str, Any]]:
        """Client backends on PostgreSQL for our database (pg_stat_activity, via the direct URL)."""
        import neon_connect

        with neon_connect.connect(
            self.env.get("DATABASE_URL_UNPOOLED") or None, direct=True
        ) as conn:
            rows = conn.execute(
                "SELECT pid, client_port, state, query FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        return [
            dict(zip(("pid", "client_port", "state", "query"), row, strict=True)) for row in rows
        ]


@dataclass
class Step:
    name: str
    endpoint: str = "?"
    evidence: list[str] = field(default_factory=list)
    figures: str = ""
    ok: bool = True
    seconds: float = 0.0


class Progress:
    """One line per step; a counter for the long ones."""

    def __init__(self, total: int, stream: Any = sys.stdout) -> None:
        self.total, self.n, self.stream = total, 0, stream

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Callable[[str], None]]:
        self.n += 1
        prefix = f"[{self.n}/{self.total}] {title}"
        self.stream.write(prefix + " ...")
        self.stream.flush()
        started = time.monotonic()

        def update(text: str) -> None:
            if self.stream.isatty():
                self.stream.write(f"\r{prefix} ... {text}")
                self.stream.flush()

        yield update
        done = f"done in {time.monotonic() - started:.1f}s\n"
        self.stream.write(f"\r{prefix} ... {done}" if self.stream.isatty() else f" {done}")
        self.stream.flush()


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on port {port}")


@contextlib.contextmanager
def _server(cmd: list[str], cwd: Path, env: dict[str, str], port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _request(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any], float]:
    data = json.dumps(body).encode() if body is not None else None
    started = time.perf_counter()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read() or b"{}")
            status = response.status
    except Exception as exc:  # an error is a figure of the report, not a crash of the demo
        return 0, {"error": str(exc)}, (time.perf_counter() - started) * 1000
    return status, payload, (time.perf_counter() - started) * 1000


def _migrations(target: Target, env: dict[str, str], progress: Progress) -> list[Step]:
    steps = []
    for name, cmd, cwd in (
        ("Django migrate", [sys.executable, "manage.py", "migrate", "--noinput"], DJANGO_APP),
        ("Alembic upgrade head", [str(BIN / "alembic"), "upgrade", "head"], SQLALCHEMY_APP),
    ):
        with progress.step(name):
            before = target.pooler_xacts()
            started = time.monotonic()
            result = _run(cmd, cwd, env)
            step = Step(name, seconds=time.monotonic() - started, ok=result.returncode == 0)
            after = target.pooler_xacts()
        said = [line for line in result.stdout.splitlines() if "migrating on the" in line]
        if said:
            step.evidence.append(
                f"pg_backend_pid() against the client's login key: {said[0].split('the ')[-1]}"
            )
        if before is not None and after is not None:
            step.evidence.append(f"PgBouncer forwarded {after - before} transactions")
            step.endpoint = "direct" if after == before else "POOLED"
        elif said:
            step.endpoint = said[0].split("the ")[-1].split()[0]
        step.figures = (
            f"{step.seconds:.1f}s"
            if step.ok
            else f"FAILED: {(result.stderr or result.stdout)[-300:]}"
        )
        steps.append(step)
    return steps


def _burst(
    target: Target,
    name: str,
    base: str,
    calls: list[tuple[str, dict[str, Any] | None]],
    requests: int,
    update: Callable[[str], None],
) -> Step:
    peaks = {"clients": 0, "servers": 0, "backends": 0}
    stop = threading.Event()

    def sample() -> None:
        with target.sampler() as read:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    for key, value in read().items():
                        peaks[key] = max(peaks[key], value)
                stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    before = target.pooler_xacts()
    sampler.start()
    started = time.monotonic()
    done: list[tuple[int, dict[str, Any], float]] = []
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [
            pool.submit(_request, base + path, body)
            for path, body in (calls[i % len(calls)] for i in range(requests))
        ]
        for future in futures:
            done.append(future.result())
            if len(done) % 10 == 0:
                update(f"{len(done)}/{requests} requests")
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    after = target.pooler_xacts()
    latencies = sorted(ms for _, _, ms in done)
    errors = sum(1 for status, _, _ in done if not 200 <= status < 300)
    served = Counter(
        payload.get("served_by", "?") for status, payload, _ in done if 200 <= status < 300
    )
    step = Step(name, seconds=elapsed, ok=errors == 0)
    failed = [(status, payload) for status, payload, _ in done if not 200 <= status < 300]
    if failed:  # what the first failure said, so that a red report can be read
        step.evidence.append(f"first failure: HTTP {failed[0][0]} {failed[0][1]}"[:400])
    step.endpoint = (
        "pooled" if set(served) == {"pooled"} else ", ".join(f"{k}: {v}" for k, v in served.items())
    )
    step.evidence.append(
        f"PostgreSQL ran {served.get('pooled', 0)}/{len(done)} responses on PgBouncer's backends"
    )
    if before is not None and after is not None:
        step.evidence.append(
            f"PgBouncer forwarded {after - before} transactions; peak {peaks['clients']} clients "
            f"on {peaks['servers']} server connections; peak {peaks['backends']} backends"
        )
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    step.figures = (
        f"{len(done)} requests, {errors} errors, median {statistics.median(latencies):.1f} ms, "
        f"p99 {p99:.1f} ms, {len(done) / elapsed:.0f} req/s"
    )
    return step


def _listen_notify(target: Target, env: dict[str, str], base: str, progress: Progress) -> Step:
    step = Step("LISTEN/NOTIFY worker")
    with progress.step(step.name):
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "listen_orders", "--count", "3", "--timeout", "30"],
            cwd=DJANGO_APP,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        hello = json.loads(worker.stdout.readline() or "{}")
        pooler_ports = {
            int(s["local_port"]) for s in target.pooler("SERVERS") if s.get("local_port")
        }
        listening = [b for b in target.backends() if b["pid"] == hello.get("pid")]
        sent = [
            _request(base + "/orders/", {"customer": f"listener-{i}", "total_cents": 100 * i})
            for i in range(3)
        ]
        out, err = worker.communicate(timeout=60)
    received = [
        json.loads(line)["order"] for line in out.splitlines() if line.startswith('{"order"')
    ]
    sent_ids = [payload.get("id") for status, payload, _ in sent if status == 201]
    step.endpoint = hello.get("served_by", "?")
    step.evidence.append(f"pg_backend_pid() against the worker's login key: {step.endpoint}")
    if listening and target.admin_url:
        direct = all(b["client_port"] not in pooler_ports for b in listening)
        step.evidence.append(
            f"pg_stat_activity: backend {hello.get('pid')}'s client port is {'not ' if direct else ''}one of PgBouncer's"
        )
    senders = Counter(payload.get("served_by") for _, payload, _ in sent)
    step.evidence.append(f"NOTIFY sent by {dict(senders)} requests")
    step.ok = (
        worker.returncode == 0
        and sorted(received) == sorted(sent_ids)
        and step.endpoint == "direct"
    )
    step.figures = f"{len(received)}/{len(sent_ids)} notifications received" + (
        "" if step.ok else f" {err[-200:]}"
    )
    return step


def run(target: Target, *, requests: int = 300, stream: Any = sys.stdout) -> list[Step]:
    """Every step against ``target``; returns the steps (the report is printed by :func:`report`)."""
    # Explicit settings module: an inherited DJANGO_SETTINGS_MODULE would win over manage.py's default.
    env = {
        **os.environ,
        **target.env,
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "shop.settings",
    }
    progress = Progress(total=5, stream=stream)
    steps = _migrations(target, env, progress)
    django_port, catalog_port = _free_port(), _free_port()
    gunicorn = [
        str(BIN / "gunicorn"),
        "shop.wsgi",
        "-w",
        "2",
        "--threads",
        "4",
        "-b",
        f"127.0.0.1:{django_port}",
    ]
    uvicorn = [
        str(BIN / "uvicorn"),
        "catalog.app:app",
        "--port",
        str(catalog_port),
        "--log-level",
        "warning",
    ]
    with _server(gunicorn, DJANGO_APP, env, django_port) as django_base:
        with progress.step(f"Django through gunicorn (WSGI): {requests} requests") as update:
            calls: list[tuple[str, dict[str, Any] | None]] = [
                ("/orders/", None),
                ("/orders/async/", None),
                ("/orders/", {"customer": "burst", "total_cents": 999}),
            ]
            steps.append(
                _burst(target, "Django requests (gunicorn)", django_base, calls, requests, update)
            )
        with (
            _server(uvicorn, SQLALCHEMY_APP, env, catalog_port) as catalog_base,
            progress.step(f"SQLAlchemy through uvicorn (ASGI): {requests} requests") as update,
        ):
            calls = [("/items", None), ("/items", {"name": "lamp"})]
            steps.append(
                _burst(
                    target,
                    "SQLAlchemy requests (uvicorn)",
                    catalog_base,
                    calls,
                    requests,
                    update,
                )
            )
        steps.append(_listen_notify(target, env, django_base, progress))
    return steps


def report(steps: list[Step], stream: Any = sys.stdout) -> None:
    width = max(len(s.name) for s in steps)
    stream.write("\nWhich endpoint served each step (as the servers saw it)\n")
    for s in steps:
        stream.write(
            f"  {'ok ' if s.ok else 'BAD'} {s.name.ljust(width)}  {s.endpoint:<7} {s.figures}\n"
        )
        for line in s.evidence:
            stream.write(f"      {' ' * width}  - {line}\n")


def main() -> int:
    from neon_connect import MissingURLError, resolve
    from neon_local import running

    try:
        resolve()
        neon_env = True
    except MissingURLError:
        neon_env = False
    if neon_env:
        print("Using the database in your environment (DATABASE_URL); starting nothing.")
        names = (
            "DATABASE_URL",
            "DATABASE_URL_UNPOOLED",
            "POSTGRES_URL",
            "POSTGRES_URL_NON_POOLING",
            "DATABASE_URL_POOLED",
            "DIRECT_URL",
        )
        steps = run(Target(env={k: os.environ[k] for k in names if os.environ.get(k)}))
    else:
        print(
            "No DATABASE_URL: starting the local stand-in (PostgreSQL + PgBouncer behind a "
            "Neon-like proxy: TLS, SCRAM with channel binding) ..."
        )
        started = time.monotonic()
        with running(pool_size=5) as state:
            print(
                f"  up in {time.monotonic() - started:.1f}s: PostgreSQL {state.pg_version}, PgBouncer {state.pgbouncer_version}"
            )
            steps = run(Target(env=state.env(), admin_url=state.admin_url))
        print("Stand-in stopped and removed.")
    report(steps)
    return 0 if all(s.ok for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
