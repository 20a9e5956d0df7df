"""``make bench``: every configuration side by side, in one run, through the delay proxy.

    .venv/bin/python -m benchmarks.run [--quick] [--out docs/benchmarks.md]

One stand-in (real PostgreSQL + PgBouncer, TLS + SCRAM); every configuration gets its own
delay proxy in front of it, so round trips and connections are counted per configuration.
Configurations are interleaved round by round (A B C ... A B C ...), so a noisy neighbour
slows them all alike. Results go to ``docs/benchmarks/results.json``; ``benchmarks.report``
turns them into ``docs/benchmarks.md`` and the plots. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import psycopg

from neon_connect import psycopg_params, resolve
from neon_local import StandInState, running
from neon_local.configs import OWNER
from neon_local.neon_proxy import NeonProxy

from . import report
from .configs import CONFIGS
from .load import sequential, throughput
from .monitor import Monitor
from .proxy import ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
RTTS = (0.0, 0.001, 0.020)
CONCURRENCY = (1, 16, 64)
THROUGHPUT_RTT = 0.001
NEON_BENCH_HOST = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
LIBPQ_16 = 160000  # a libpq without sslnegotiation (added in 17)


@dataclass(frozen=True)
class Plan:
    """How much to run: the full plan takes about 10 minutes on 2 cores."""

    rounds: dict[float, int]
    requests: dict[float, int]
    throughput_rounds: int
    throughput_seconds: float
    overhead_rounds: int

    @classmethod
    def full(cls) -> Plan:
        return cls({0.0: 4, 0.001: 4, 0.020: 3}, {0.0: 12, 0.001: 12, 0.020: 5}, 2, 1.2, 15)

    @classmethod
    def quick(cls) -> Plan:
        return cls({0.0: 2, 0.001: 2, 0.020: 1}, {0.0: 5, 0.001: 5, 0.020: 3}, 1, 0.5, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _via(url: str, port: int, proxy_port: int) -> str:
    out = url.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{proxy_port}/")
    assert out != url
    return out


@contextlib.contextmanager
def _servers(
    specs: dict[str, dict[str, dict[str, str]]], log_dir: Path
) -> Iterator[dict[str, int]]:
    """gunicorn (WSGI, 2 workers x 8 threads) and two uvicorns (Django ASGI, the SQLAlchemy app)."""
    python = sys.executable
    ports = {name: _free_port() for name in ("wsgi", "asgi", "sa")}
    commands = {
        "wsgi": [
            python, "-m", "gunicorn", "benchmarks.djangosite.wsgi:application",
            "-k", "gthread", "-w", "2", "--threads", "8", "--keep-alive", "300",
            "-b", f"127.0.0.1:{ports['wsgi']}", "--log-level", "warning",
        ],
        "asgi": [
            python, "-m", "uvicorn", "benchmarks.djangosite.asgi:application", "--lifespan", "off",
            "--port", str(ports["asgi"]), "--timeout-keep-alive", "300",
            "--log-level", "warning", "--no-access-log",
        ],
        "sa": [
            python, "-m", "uvicorn", "benchmarks.sa_app:app", "--lifespan", "off",
            "--port", str(ports["sa"]), "--timeout-keep-alive", "300",
            "--log-level", "warning", "--no-access-log",
        ],
    }  # fmt: skip
    env_var = {"wsgi": "BENCH_DJANGO", "asgi": "BENCH_DJANGO", "sa": "BENCH_SA"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            env = {**os.environ, env_var[name]: json.dumps(specs[name]), "PYTHONPATH": str(ROOT)}
            log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + 60
        for name, port in ports.items():
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                    break
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"{name} server did not start; see {log_dir / name}.log")
                time.sleep(0.2)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def _protocol(state: StandInState, proxies: ProxyProcess, front: NeonProxy) -> dict[str, float]:
    """Round trips of the building blocks, through their own proxies (at RTT 0)."""
    pooled = proxies.add("probe_pooled", "127.0.0.1", state.pooler_port)
    direct = proxies.add("probe_direct", "127.0.0.1", state.pg_port)
    pooled_url = _via(state.pooled_url, state.pooler_port, pooled)
    direct_url = _via(state.direct_url, state.pg_port, direct)
    out: dict[str, float] = {}

    def trips(name: str) -> int:
        return proxies.counts()[name].round_trips

    for label, url, probe in (
        ("pooled", pooled_url, "probe_pooled"),
        ("direct", direct_url, "probe_direct"),
    ):
        before = trips(probe)
        conn = psycopg.connect(url)
        out[f"psycopg connect ({label}: TLS + SCRAM)"] = trips(probe) - before
        before = trips(probe)
        conn.execute("SELECT 1").fetchone()
        out[f"first query, in a new transaction ({label})"] = trips(probe) - before
        before = trips(probe)
        conn.execute("SELECT 1").fetchone()
        out[f"query inside the transaction ({label})"] = trips(probe) - before
        before = trips(probe)
        conn.commit()
        out[f"COMMIT ({label})"] = trips(probe) - before
        conn.close()

    async def asyncpg_connect() -> None:
        before = trips("probe_pooled")
        conn = await asyncpg.connect(pooled_url, statement_cache_size=0)
        out["asyncpg connect (pooled: TLS + SCRAM)"] = trips("probe_pooled") - before
        before = trips("probe_pooled")
        await conn.fetchval("SELECT 1")
        out["asyncpg query, statement cache off (pooled)"] = trips("probe_pooled") - before
        await conn.close()

    asyncio.run(asyncpg_connect())
    out.update(_direct_tls_connects(state, proxies, front))
    return out


def _direct_tls_connects(
    state: StandInState, proxies: ProxyProcess, front: NeonProxy
) -> dict[str, float]:
    """A connect to a Neon host name, with and without direct TLS, through the stand-in's
    Neon-like proxy (PgBouncer 1.24 has no direct TLS), the one the run's configurations use:
    counted at 10 ms RTT, where each flight counts once, and averaged over five connects."""
    port = proxies.add("probe_front", "127.0.0.1", front.port)
    endpoint = resolve(_neon_host_urls(state, port)[0]).app
    proxies.set_rtt(0.01)
    out: dict[str, float] = {}
    try:
        for version in (LIBPQ_16, psycopg.pq.version()):
            params = psycopg_params(endpoint, client_version=version)
            way = "direct TLS" if params.get("sslnegotiation") == "direct" else "SSLRequest"
            label = f"{way}, as libpq {version // 10000}"
            counts = []
            for _ in range(5):
                before = proxies.counts()["probe_front"].round_trips
                psycopg.connect(**params).close()
                counts.append(proxies.counts()["probe_front"].round_trips - before)
            out[f"psycopg connect to a Neon host name (pooled: {label})"] = sum(counts) / 5
    finally:
        proxies.set_rtt(0.0)
    return out


def _neon_proxy(state: StandInState) -> NeonProxy:
    """The stand-in's Neon-like proxy before its pooler: direct TLS, channel binding."""
    return NeonProxy(
        upstream_port=state.pooler_port,
        runtime_dir=state.runtime_dir,
        passwords={OWNER: state.password},
    )


def _neon_host_urls(state: StandInState, port: int) -> tuple[str, str]:
    """The pooled and direct URLs of a Neon host name whose pooled endpoint is ``port`` here
    (the stand-in's Neon-like proxy, or a counting proxy before it), as Neon's console writes
    them: Neon's own choices (direct TLS) apply to them."""
    password = quote(state.password, safe="")
    direct_host = NEON_BENCH_HOST.replace("-pooler", "")
    return (
        f"postgresql://{OWNER}:{password}@{NEON_BENCH_HOST}:{port}/neondb"
        "?sslmode=require&channel_binding=require&hostaddr=127.0.0.1",
        f"postgresql://{OWNER}:{password}@{direct_host}:{state.pg_port}/neondb"
        "?sslmode=require&hostaddr=127.0.0.1",
    )


def _kept_query_ms(conn: psycopg.Connection[Any], n: int = 15) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _latency(
    plan: Plan, ports: dict[str, int], proxies: ProxyProcess, kept: psycopg.Connection[Any]
) -> dict[str, Any]:
    """Sequential requests (one client) at each RTT; round trips and connects per request."""
    out: dict[str, Any] = {"rtt": {}, "configs": {c.name: {} for c in CONFIGS}}
    for rtt in RTTS:
        proxies.set_rtt(rtt)
        out["rtt"][str(rtt)] = {"kept_query_ms": _kept_query_ms(kept)}
        samples: dict[str, dict[str, list[float]]] = {
            c.name: {"lat": [], "rt": [], "connects": []} for c in CONFIGS
        }
        failures: dict[str, Counter[str]] = {c.name: Counter() for c in CONFIGS}
        for _ in range(plan.rounds[rtt]):
            for config in CONFIGS:
                n = plan.requests[rtt]
                before = proxies.counts()[config.name]
                lat, errors = asyncio.run(sequential(ports[config.server], config.path, n))
                after = proxies.counts()[config.name]
                s = samples[config.name]
                s["lat"] += lat
                s["rt"].append((after.round_trips - before.round_trips) / n)
                s["connects"].append((after.connections - before.connections) / n)
                failures[config.name].update(errors)
        for name, s in samples.items():
            out["configs"][name][str(rtt)] = {
                "p50_ms": _pct(s["lat"], 0.5),
                "p99_ms": _pct(s["lat"], 0.99),
                "requests": len(s["lat"]),
                "errors": dict(failures[name]),
                "round_trips": statistics.median(s["rt"]),
                "connects": statistics.median(s["connects"]),
            }
        print(f"  latency at RTT {rtt * 1000:g} ms done", flush=True)
    return out


def _throughput(
    plan: Plan, ports: dict[str, int], proxies: ProxyProcess, monitor: Monitor
) -> dict[str, Any]:
    """Concurrent clients at RTT 1 ms; peaks of connections seen by PgBouncer and PostgreSQL."""
    proxies.set_rtt(THROUGHPUT_RTT)
    out: dict[str, dict[str, Any]] = {c.name: {} for c in CONFIGS}
    for clients in CONCURRENCY:
        per: dict[str, list[dict[str, Any]]] = {c.name: [] for c in CONFIGS}
        for _ in range(plan.throughput_rounds):
            for config in CONFIGS:
                proxies.reset_peaks()
                monitor.begin(config.name)
                result = asyncio.run(
                    throughput(ports[config.server], config.path, clients, plan.throughput_seconds)
                )
                peaks = monitor.end()
                per[config.name].append(
                    {
                        "rps": result.per_second,
                        "errors": dict(result.errors),
                        "p50_ms": _pct(result.latencies, 0.5),
                        "p99_ms": _pct(result.latencies, 0.99),
                        "client_conns": proxies.counts()[config.name].peak_open,
                        **asdict(peaks),
                    }
                )
        for name, runs in per.items():
            out[name][str(clients)] = {
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "errors": dict(sum((Counter(r["errors"]) for r in runs), Counter())),
                **{
                    key: max(r[key] for r in runs)
                    for key in (
                        "client_conns",
                        "pooler_clients",
                        "pooler_servers",
                        "backends",
                        "pooler_clients_left",
                    )
                },
            }
        print(f"  throughput at {clients} clients done", flush=True)
    return out


def _overhead(state: StandInState, plan: Plan) -> dict[str, Any]:
    """Library CPU, in its own process (its own Django settings), without the proxy."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": state.pooled_url,
        "DATABASE_URL_UNPOOLED": state.direct_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--rounds", str(plan.overhead_rounds)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _versions(state: StandInState, pgbouncer: str) -> dict[str, str]:
    import django
    import gunicorn  # type: ignore[import-untyped]
    import sqlalchemy
    import uvicorn

    return {
        "Python": platform.python_version(),
        "PostgreSQL": state.pg_version,
        "PgBouncer": pgbouncer or state.pgbouncer_version,
        "Django": django.get_version(),
        "SQLAlchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "asyncpg": asyncpg.__version__,
        "gunicorn": gunicorn.__version__,
        "uvicorn": uvicorn.__version__,
    }


def _machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{int(meminfo[1]) / 1024 / 1024:.1f} GiB",
        "platform": platform.platform(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for iterating")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stand-in on the way out
    plan = Plan.quick() if args.quick else Plan.full()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    assets = out.with_suffix("")
    assets.mkdir(exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick else ""),
        "machine": _machine(),
        "plan": asdict(plan),
    }
    with (
        running(pool_size=20, max_connections=200, proxy=False) as state,
        ProxyProcess() as proxies,
        _neon_proxy(state) as front,
    ):
        with psycopg.connect(state.direct_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_item (id bigserial PRIMARY KEY, note text NOT NULL)")
            conn.execute("INSERT INTO bench_item (note) VALUES ('first')")
        monitor = Monitor(state)
        results["versions"] = _versions(state, monitor.pgbouncer_version)
        print(f"stand-in: PgBouncer {results['versions']['PgBouncer']}", flush=True)
        specs: dict[str, dict[str, dict[str, str]]] = {"wsgi": {}, "asgi": {}, "sa": {}}
        for config in CONFIGS:
            if config.neon_host:
                port = proxies.add(config.name, "127.0.0.1", front.port)
                url, direct_url = _neon_host_urls(state, port)
            else:
                target = state.pg_port if config.direct else state.pooler_port
                port = proxies.add(config.name, "127.0.0.1", target)
                base = state.direct_url if config.direct else state.pooled_url
                url, direct_url = _via(base, target, port), state.direct_url
            specs[config.server][config.name] = {
                "kind": config.kind,
                "url": url,
                "direct_url": direct_url,
            }
        results["protocol"] = _protocol(state, proxies, front)
        log_dir = Path(tempfile.mkdtemp(prefix="neon-bench-logs-"))
        kept_port = proxies.add("kept", "127.0.0.1", state.pooler_port)
        kept = psycopg.connect(
            _via(state.pooled_url, state.pooler_port, kept_port), autocommit=True
        )
        try:
            with _servers(specs, log_dir) as ports:
                for config in CONFIGS:  # warm up: imports, engines, first connections
                    asyncio.run(sequential(ports[config.server], config.path, 3))
                print("latency (one client, interleaved rounds)...", flush=True)
                results["latency"] = _latency(plan, ports, proxies, kept)
                print("throughput (1, 16, 64 clients at RTT 1 ms)...", flush=True)
                results["throughput"] = _throughput(plan, ports, proxies, monitor)
        finally:
            kept.close()
            monitor.close()
        print("library overhead (CPU, in process)...", flush=True)
        results["overhead"] = _overhead(state, plan)
    results["seconds"] = round(time.monotonic() - started)
    (assets / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write(results, out, assets)
    print(f"wrote {out} in {results['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
