"""The scenarios of issue 12, each a function returning its figures.

Each runs a bounded load (clients x writes, and seconds) through neon_sqlalchemy's engines on
the stand-in, injects one fault from :mod:`neon_local.faults` at a moment inside the
load, waits for the clients, and compares acknowledged writes with the ledger.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

import neon_sqlalchemy
from neon_local.faults import Faults
from neon_local.processes import free_port, port_open
from neon_local.standin import StandInState

from .load import (
    LEDGER_DDL,
    CountingRetry,
    Figures,
    HttpTarget,
    Load,
    Plan,
    Stored,
    figures,
    first_ack_after,
    peak_in_flight,
)

Stack = Literal[
    "sqlalchemy-sync", "sqlalchemy-async", "uvicorn-sync", "uvicorn-async", "gunicorn-django"
]
STACKS: tuple[Stack, ...] = ("sqlalchemy-sync", "sqlalchemy-async")
UVICORN: tuple[Stack, ...] = ("uvicorn-sync", "uvicorn-async")
SERVED: tuple[Stack, ...] = (*UVICORN, "gunicorn-django")
_servers: dict[tuple[int, str], int] = {}  # (the stand-in's pooler port, server) -> app port
_SERVERS = {
    "uvicorn": ["-m", "uvicorn", "resilience.app:app", "--log-level", "warning",
                "--no-access-log", "--timeout-graceful-shutdown", "5", "--host", "127.0.0.1",
                "--port"],
    "gunicorn": ["-m", "gunicorn", "-k", "gthread", "--threads", "16", "-w", "1",
                 "--log-level", "warning", "--graceful-timeout", "5",
                 "resilience.django_app:application", "--bind"],
}  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """How big a run is: the full one for ``make resilience``, a short one for ``make test``."""

    clients: int = 100
    pause: float = 2.0
    seconds: float = 6.0
    writes: int = 200
    down: float = 0.5
    crowd: int = 1000
    crowd_max_connections: int = 30
    crowd_pool_size: int = 20
    crowd_arrival: float = 20.0  # the crowd connects within this many seconds...
    crowd_hold: float = 10.0  # ...and keeps writing, all connected, for this long after
    exhaustion_clients: int = 40
    migration_seconds: float = 2.0
    restart_seconds: float = 24.0  # server restarts: PgBouncer's server_login_retry is 15 s
    worker_ticks: int = 20  # workers outside requests: ticks after the fault


REFUSAL = "server login has been failing"

FULL = Sizes()
SHORT = Sizes(
    clients=12,
    pause=0.5,
    seconds=2.0,
    writes=60,
    down=0.3,
    crowd=100,
    crowd_arrival=1.0,
    crowd_hold=1.0,
    exhaustion_clients=12,
    migration_seconds=0.5,
    restart_seconds=2.0,
    worker_ticks=8,
)


def prepare(state: StandInState) -> None:
    """The ledger table, a warm pooler, and durable commits: Neon acknowledges a commit only once the
    safekeepers hold it, while the stand-in runs ``synchronous_commit = off`` for speed."""
    with psycopg.connect(state.superuser_url, autocommit=True) as su:
        su.execute("ALTER DATABASE neondb SET synchronous_commit = on")
    with psycopg.connect(state.direct_url, autocommit=True) as conn:
        for ddl in LEDGER_DDL:
            conn.execute(ddl)
    warm_pooler(state)


def warm_pooler(state: StandInState) -> None:
    """One query through PgBouncer, so that it has a server connection, as under a running
    app. (PgBouncer 1.18 does not wake, on RESUME, a login that waits for a pool's first
    server connection: that client hangs until its connect_timeout.)"""
    with psycopg.connect(state.pooled_url, autocommit=True) as conn:
        conn.execute("SELECT 1")


@contextlib.contextmanager
def serving(state: StandInState, server: str = "uvicorn") -> Iterator[int]:
    """An app server on the stand-in's URLs: ``uvicorn`` runs :mod:`resilience.app`,
    ``gunicorn`` (threads) :mod:`resilience.django_app`. Yields its port."""
    port = free_port()
    address = str(port) if server == "uvicorn" else f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, *_SERVERS[server], address],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **state.env(), "DJANGO_SETTINGS_MODULE": "resilience.django_app"},
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{server} did not start")
            time.sleep(0.05)
        _servers[state.pooler_port, server] = port
        yield port
    finally:
        _servers.pop((state.pooler_port, server), None)
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def engine_for(
    state: StandInState, stack: Stack, **kwargs: Any
) -> Engine | AsyncEngine | HttpTarget:
    if stack in SERVED:
        server, kind = stack.split("-")
        return HttpTarget(_servers[state.pooler_port, server], f"/write/{kind}")
    retry = CountingRetry()
    if stack == "sqlalchemy-async":
        return neon_sqlalchemy.create_async_engine(env=state.env(), retry=retry, **kwargs)
    return neon_sqlalchemy.create_engine(env=state.env(), retry=retry, **kwargs)


def _run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _finish(
    load: Load, state: StandInState, *, scenario: str, stack: str, fault_at: float | None
) -> Figures:
    load.wait()
    return figures(
        load,
        Stored.read(state.direct_url, load.run),
        scenario=scenario,
        stack=stack,
        fault_at=fault_at,
    )


def cold_start(state: StandInState, stack: Stack, sizes: Sizes) -> Figures:
    """Clients arrive while the pooler holds every query for ``sizes.pause`` seconds."""
    faults = Faults(state)
    plan = Plan(
        clients=sizes.clients,
        max_writes=sizes.writes,
        seconds=sizes.pause + 2.0,
        arrive_within=sizes.pause * 0.8,
    )
    load = Load(engine_for(state, stack), _run_id("cold"), plan)
    warm_pooler(state)
    with faults.paused_pooler():
        paused_at = time.monotonic()
        load.start()
        time.sleep(sizes.pause)
    resumed_at = time.monotonic()
    result = _finish(load, state, scenario="cold start", stack=stack, fault_at=paused_at)
    slowest = first_ack_after(load, resumed_at)
    acks = [done for c in load.clients for _, done in c.ack_spans if done >= resumed_at]
    first = f"{min(acks) - resumed_at:.3f}s" if acks else "never"
    result.notes.append(
        f"pause {sizes.pause:g}s; first row {first} after RESUME, slowest client's first row "
        f"{slowest}s after it ({sizes.clients} waiting transactions drain through a pool of "
        f"{state.pool_size})"
    )
    return result


def _during_load(
    state: StandInState,
    stack: Stack,
    sizes: Sizes,
    *,
    scenario: str,
    inject: Callable[[Faults], str],
    seconds: float | None = None,
) -> Figures:
    faults = Faults(state)
    seconds = seconds or sizes.seconds
    plan = Plan(
        clients=sizes.clients,
        max_writes=sizes.writes * int(seconds // sizes.seconds + 1),
        seconds=seconds,
    )
    load = Load(engine_for(state, stack), _run_id(scenario.split()[0]), plan).start()
    time.sleep(random.uniform(0.3, 0.5) * sizes.seconds)  # a random moment mid-traffic
    fault_at = load.fault()
    note = inject(faults)
    result = _finish(load, state, scenario=scenario, stack=stack, fault_at=fault_at)
    result.notes.append(note)
    return result


def suspend(state: StandInState, stack: Stack, sizes: Sizes) -> Figures:
    return _during_load(
        state,
        stack,
        sizes,
        scenario="suspend",
        inject=lambda f: f"terminated {f.suspend()} backends",
    )


def pooler_restart(state: StandInState, stack: Stack, sizes: Sizes) -> Figures:
    def inject(f: Faults) -> str:
        f.restart_pooler(down_for=sizes.down)
        return f"PgBouncer SIGKILL, down {sizes.down:g}s, started again"

    return _during_load(state, stack, sizes, scenario="pooler restart", inject=inject)


def server_restart(
    state: StandInState, stack: Stack, sizes: Sizes, *, mode: Literal["fast", "immediate"]
) -> Figures:
    def inject(f: Faults) -> str:
        f.restart_server(mode=mode, down_for=sizes.down)
        return f"pg_ctl stop -m {mode}, down {sizes.down:g}s, started again"

    result = _during_load(
        state,
        stack,
        sizes,
        scenario=f"server restart ({mode})",
        inject=inject,
        seconds=sizes.restart_seconds,
    )
    # For server_login_retry PgBouncer refuses each transaction's first statement unforwarded:
    # the adapters send it again, so no caller may see the refusal.
    refusals = sum(n for error, n in result.errors.items() if REFUSAL in error)
    if refusals:
        result.problems.append(f"{refusals} callers got the pooler's refusal ({REFUSAL})")
    result.notes.append(
        f"{result.reruns} statements refused by PgBouncer before forwarding were sent again "
        "on a new connection"
        if stack not in SERVED
        else "statements refused by PgBouncer before forwarding were sent again inside the "
        "app server (not counted here)"
    )
    return result


def pool_exhaustion(state: StandInState, stack: Stack, sizes: Sizes) -> Figures:
    """Pool 1, query_wait_timeout 1 s, slow transactions: the late callers get the pooler's
    ``query_wait_timeout``; then the settings come back and a lighter load must see no error."""
    faults = Faults(state)
    plan = Plan(
        clients=sizes.exhaustion_clients,
        max_writes=3,
        seconds=sizes.seconds + 0.5,
        sleep=0.3,
    )
    with faults.exhausted_pool(pool_size=1, query_wait_timeout=1):
        crowd = Load(engine_for(state, stack), _run_id("exhaust"), plan).start()
        result = _finish(crowd, state, scenario="pool exhaustion", stack=stack, fault_at=None)
    if not any("query_wait_timeout" in error for error in result.errors):
        result.problems.append("no caller got query_wait_timeout")
    after = Load(
        engine_for(state, stack),
        _run_id("exhaust-after"),
        Plan(clients=max(2, sizes.exhaustion_clients // 4), max_writes=5, seconds=sizes.seconds),
    ).start()
    recovered = _finish(after, state, scenario="after", stack=stack, fault_at=None)
    result.notes.append(
        f"after the load dropped: {recovered.acked} writes, "
        f"{recovered.connect_errors + recovered.tx_errors + recovered.commit_unknown} errors, "
        f"lost {recovered.lost}, doubled {recovered.doubled}"
    )
    if not recovered.ok or recovered.acked == 0 or recovered.errors:
        result.problems.append(f"no recovery after the load dropped: {recovered.errors}")
    return result


def crowd(sizes: Sizes, stack: Stack) -> list[Figures]:
    """``sizes.crowd`` clients at once on a stand-in with ``max_connections`` 30: on the pooled
    endpoint, then on the direct one with a connection per client (as separate processes
    would have), which must fail fast and point to the pooled endpoint."""
    from neon_local.standin import running

    results = []
    with running(
        max_connections=sizes.crowd_max_connections, pool_size=sizes.crowd_pool_size, proxy=False
    ) as state:
        prepare(state)
        for direct in (False, True):
            extra = {"poolclass": NullPool, "direct": True} if direct else {}
            plan = Plan(
                clients=sizes.crowd,
                max_writes=sizes.writes,
                seconds=sizes.crowd_arrival + sizes.crowd_hold,
                think=0.5,
                arrive_within=sizes.crowd_arrival,
                hold=True,
            )
            load = Load(engine_for(state, stack, **extra), _run_id("crowd"), plan)
            with _Peak(state) as peak:
                load.start()
                load.wait(extra=90)
            result = figures(
                load,
                Stored.read(state.direct_url, load.run),
                scenario=f"{sizes.crowd} clients, {'direct' if direct else 'pooled'}",
                stack=stack,
            )
            connects = sorted(t for c in load.clients for t in c.connect_seconds)
            result.notes.append(
                f"connects within {sizes.crowd_arrival:g}s, then writes for "
                f"{sizes.crowd_hold:g}s; up to {peak.clients} clients connected to the "
                f"pooler at once, {peak_in_flight(load)} writes in flight at once; connect "
                f"p50/max {_ms(connects, 0.5)}/{_ms(connects, 1.0)} ms; max_connections "
                f"{sizes.crowd_max_connections}, pool {sizes.crowd_pool_size}; peak server "
                f"connections {peak.peak}"
            )
            if not direct and peak.peak > sizes.crowd_pool_size:
                result.problems.append(f"{peak.peak} server connections > pool")
            if direct:
                failed = [c.first_connect_error for c in load.clients if c.first_connect_error]
                points = sum(_points_to_pooled(e) for e in failed)
                slowest = max((c.connect_error_seconds for c in load.clients), default=0.0)
                result.notes.append(
                    f"{points}/{len(failed)} errors point to the pooled endpoint; "
                    f"slowest failure after {slowest:.2f}s"
                )
                if points != len(failed):
                    result.problems.append("a direct-endpoint error without the pooled hint")
            results.append(result)
    return results


def _ms(values: list[float], q: float) -> int:
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000) if values else 0


def _points_to_pooled(exc: BaseException) -> bool:
    driver_error = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    return "pooled endpoint" in "\n".join(getattr(driver_error, "__notes__", []))


class _Peak:
    """Samples how many server connections PostgreSQL holds for neondb while the load runs."""

    def __init__(self, state: StandInState) -> None:
        self.state = state
        self.peak = 0
        self.clients = 0  # client connections PgBouncer holds (active + waiting)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _Peak:
        self._conn = psycopg.connect(self.state.superuser_url, autocommit=True)
        self._admin = psycopg.connect(
            self.state.admin_url, autocommit=True, cursor_factory=psycopg.ClientCursor
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._conn.close()
        self._admin.close()

    def _sample(self) -> None:
        for _ in range(100_000):  # bounded: 100k samples
            if self._stop.is_set():
                return
            row = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND datname = 'neondb'"
            ).fetchone()
            self.peak = max(self.peak, int(row[0]) if row else 0)
            with self._admin.cursor() as cur:
                cur.execute("SHOW POOLS")
                names = [d.name for d in cur.description or []]
                pools = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            held = sum(
                int(p["cl_active"]) + int(p["cl_waiting"])
                for p in pools
                if p["database"] == "neondb"
            )
            self.clients = max(self.clients, held)
            time.sleep(0.02)


MIGRATION = '''
"""a slow migration, so that two deploys overlap"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.execute("SELECT pg_sleep({seconds})")
    op.create_table("gadgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("gadgets")
'''


DJANGO_MIGRATION = '''
from django.db import migrations, models


class Migration(migrations.Migration):
    """a slow migration, so that two deploys overlap"""

    initial = True
    dependencies = []
    operations = [
        migrations.RunSQL("SELECT pg_sleep({seconds})", migrations.RunSQL.noop),
        migrations.CreateModel("Gadget", [("id", models.BigAutoField(primary_key=True))]),
    ]
'''

DJANGO_SETTINGS = """
import neon_django

SECRET_KEY = "neon-connect-resilience"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["neon_django", "gadgets"]
DATABASES = {"default": neon_django.config()}
"""


def _alembic_project(folder: Path, seconds: float) -> tuple[list[str], str, str]:
    """An Alembic project with one slow revision: (command, applied marker, version query)."""
    import neon_sqlalchemy.alembic as neon_alembic

    ini = folder / "alembic.ini"
    with contextlib.redirect_stdout(io.StringIO()):  # Alembic's "Generating ..." lines
        neon_alembic.init(folder / "migrations", ini=ini)
    (folder / "migrations" / "versions" / "0001_gadgets.py").write_text(
        MIGRATION.replace("{seconds}", str(seconds))
    )
    command = [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"]
    return command, "Running upgrade  -> 0001", "SELECT version_num FROM alembic_version"


def _django_project(folder: Path, seconds: float) -> tuple[list[str], str, str]:
    """A Django project (neon_django's migrate) with one slow migration, as above."""
    app = folder / "gadgets"
    (app / "migrations").mkdir(parents=True)
    for name in ("__init__.py", "models.py", "migrations/__init__.py"):
        (app / name).write_text("")
    (app / "migrations" / "0001_initial.py").write_text(
        DJANGO_MIGRATION.replace("{seconds}", str(seconds))
    )
    (folder / "gadget_settings.py").write_text(DJANGO_SETTINGS)
    command = [sys.executable, "-m", "django", "migrate", "gadgets", "--noinput",
               "--settings", "gadget_settings"]  # fmt: skip
    return (
        command,
        "Applying gadgets.0001_initial... OK",
        "SELECT name FROM django_migrations WHERE app = 'gadgets'",
    )


def migrations(state: StandInState, stack: Stack, sizes: Sizes) -> Figures:
    """Two ``alembic upgrade head`` runs at once while the app serves traffic."""
    return _two_deploys(state, stack, sizes, tool="Alembic", project=_alembic_project)


def django_migrations(state: StandInState, stack: Stack, sizes: Sizes) -> Figures:
    """Two ``manage.py migrate`` runs (through neon_django) at once during traffic."""
    return _two_deploys(state, stack, sizes, tool="Django", project=_django_project)


def _two_deploys(
    state: StandInState,
    stack: Stack,
    sizes: Sizes,
    *,
    tool: str,
    project: Callable[[Path, float], tuple[list[str], str, str]],
) -> Figures:
    """Two deploys migrate a fresh database at once while the app serves traffic: one
    applies, the other waits on the migration lock and finds nothing to do; PgBouncer
    forwards none of the migration's transactions."""
    database = f"mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(state.superuser_url, autocommit=True) as su:
        su.execute(f"CREATE DATABASE {database} OWNER neondb_owner")
    env = {k: v.replace("/neondb?", f"/{database}?") for k, v in state.env().items()}
    plan = Plan(clients=sizes.clients, max_writes=sizes.writes, seconds=sizes.seconds)
    load = Load(engine_for(state, stack), _run_id("migrate"), plan)
    with tempfile.TemporaryDirectory(prefix="resilience-migrate-") as folder:
        command, marker, versions_query = project(Path(folder), sizes.migration_seconds)
        load.start()
        time.sleep(0.2 * sizes.seconds)
        runs = [
            subprocess.Popen(
                command,
                cwd=folder,
                env={**os.environ, **env, "PYTHONPATH": folder},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=120) for run in runs]
    result = _finish(load, state, scenario=f"migrations ({tool})", stack=stack, fault_at=None)
    codes = [run.returncode for run in runs]
    applied = sum(marker in out + err for out, err in outputs)
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        versions = conn.execute(versions_query).fetchall()
    with psycopg.connect(state.admin_url, autocommit=True) as admin, admin.cursor() as cur:
        cur.execute("SHOW STATS")
        names = [d.name for d in cur.description or []]
        stats = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    forwarded = sum(int(r["total_xact_count"]) for r in stats if r["database"] == database)
    result.notes.append(
        f"two {tool} deploys: exit codes {codes}, applied {applied}x, {len(versions)} "
        f"version row(s); PgBouncer forwarded {forwarded} migration transactions"
    )
    if codes != [0, 0] or applied != 1 or len(versions) != 1 or forwarded:
        result.problems.append("migrations: " + " | ".join(err[-300:] for _, err in outputs))
    with psycopg.connect(state.superuser_url, autocommit=True) as su:
        su.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return result
