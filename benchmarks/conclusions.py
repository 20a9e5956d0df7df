"""The "What the numbers say" section, with this run's figures filled in.

The rules rest on round trips (machine-independent) and on connection counts; the times
quoted next to them come from the run that wrote the page.
"""

from __future__ import annotations

from typing import Any

ONE_MS = "0.001"
TWENTY_MS = "0.02"


class _Figures:
    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def p50(self, name: str, rtt: str = ONE_MS) -> str:
        return f"{self.results['latency']['configs'][name][rtt]['p50_ms']:.1f} ms"

    def ratio(self, slow: str, fast: str, rtt: str = ONE_MS) -> str:
        configs = self.results["latency"]["configs"]
        return f"{configs[slow][rtt]['p50_ms'] / configs[fast][rtt]['p50_ms']:.1f}x"

    def trips(self, name: str) -> str:
        return f"{self.results['latency']['configs'][name][TWENTY_MS]['round_trips']:g}"

    def rps(self, name: str, clients: str = "64") -> str:
        return f"{self.results['throughput'][name][clients]['rps']:.0f}"

    def conns(self, name: str, key: str = "pooler_clients") -> str:
        return str(max(v[key] for v in self.results["throughput"][name].values()))

    def errors(self, name: str) -> int:
        total = 0
        for rtt in self.results["latency"]["configs"][name].values():
            total += sum(rtt["errors"].values())
        for level in self.results["throughput"][name].values():
            total += sum(level["errors"].values())
        return total

    def value(self, name: str, rtt: str = ONE_MS) -> float:
        return float(self.results["latency"]["configs"][name][rtt]["p50_ms"])

    def overhead(self) -> str:
        rows = self.results["overhead"]
        parts = [f"{name}: {v['ratio']:.3f}" for name, v in rows.items()]
        first = next(iter(rows.values()))
        share = first["resolve_params_ms"] / first["without_ms"] * 100
        return f"{'; '.join(parts)}. `resolve()` + `psycopg_params()` is {share:.1f} % of a connect"


def conclusions(results: dict[str, Any]) -> str:
    f = _Figures(results)
    return f"""## What the numbers say

Round trips decide, because they are what a server 1-20 ms away charges for, and they do not
depend on this machine. A new connection through the pooler costs about 5-6 round trips (TLS
request, TLS handshake, startup, two SCRAM steps) before the first query; see the table below.

**Django under a long-running WSGI server (gunicorn, threads): keep connections.**
- `neon_django.config()`'s old default (`CONN_MAX_AGE=0`, measured as `dj_neon`) pays
  {f.trips("dj_neon")} round trips per request; `config(conn_max_age=240,
  conn_health_checks=True)` pays {f.trips("dj_neon_240")}, and the shipped default
  (`config()`, `dj_neon_default`: 240 s with health checks on a long-running server) pays
  {f.trips("dj_neon_default")}; Neon's guide written by hand (Django's `SELECT 1` health check)
  pays {f.trips("dj_guide")}.
- p50 at 1 ms RTT: {f.p50("dj_neon")} against {f.p50("dj_neon_240")} ({f.ratio("dj_neon", "dj_neon_240")});
  at 20 ms RTT: {f.p50("dj_neon", TWENTY_MS)} against {f.p50("dj_neon_240", TWENTY_MS)}.
  64 clients: {f.rps("dj_neon")} against {f.rps("dj_neon_240")} requests/s.
- The cost at the pooler is bounded: one client connection per server thread
  ({f.conns("dj_neon_240")} for 2 workers x 8 threads), and in transaction mode no server
  connection is held between transactions (PgBouncer servers stayed at the pool size).
- The check that makes a kept connection safe after Neon's suspend or a pooler restart is
  neon_django's socket check at each use, which sends nothing: Django's own health check
  would add a `SELECT 1` round trip per request ({f.trips("dj_guide")} against
  {f.trips("dj_neon_240")}).
- **Rule (now the default):** long-running WSGI servers keep the connection 240 s (under
  Neon's 5-minute suspend) with health checks; p50 of the default at 1 ms RTT
  {f.p50("dj_neon_default")} ({f.ratio("dj_neon_default", "dj_neon_240")} of the explicit 240).

**Django under ASGI (uvicorn): do not keep connections.**
- Each ASGI request runs in a new context, so a persistent connection is never reused:
  `conn_max_age=240` still opens one connection per request ({f.trips("asgi_neon_240")} round
  trips, like {f.trips("asgi_neon")} with `CONN_MAX_AGE=0`), and nothing closes it at the end.
- PgBouncer saw {f.conns("asgi_neon_240", "pooler_clients_left")} of its client connections
  still open after its run with 240, against {f.conns("asgi_neon", "pooler_clients_left")} with 0:
  they pile up until garbage collection.
- neon_django closes the request's connections when `request_finished` comes from an
  `ASGIHandler` (shipped; `config()` under uvicorn, measured as `asgi_neon_240_fix`), so the
  persistent default behaves like 0 under ASGI: {f.conns("asgi_neon_240_fix", "pooler_clients_left")} client
  connections left after its run, {f.trips("asgi_neon_240_fix")} round trips per request.
- **Rule (shipped):** under ASGI the effective `CONN_MAX_AGE` is 0, whatever the default for
  WSGI; the sender of `request_finished` tells the two apart at run time, in the request's
  context.

**Serverless (a new process per request or a frozen one between requests): `CONN_MAX_AGE=0`.**
Nothing is reused there, and a kept connection in a frozen function is a client connection
PgBouncer holds for nothing.

**SQLAlchemy: NullPool stays the pooled default; here is what it costs.**
- Sync psycopg: NullPool pays {f.trips("sync_neon")} round trips per request (a connect each
  time; raw psycopg, which sends `BEGIN` alone, pays {f.trips("sync_raw")}); `allow_client_pool=True` pays
  {f.trips("sync_pool")} (the work alone: the checkout check sends nothing). p50 at 1 ms RTT {f.p50("sync_neon")} against
  {f.p50("sync_pool")} ({f.ratio("sync_neon", "sync_pool")}); at 20 ms RTT
  {f.p50("sync_neon", TWENTY_MS)} against {f.p50("sync_pool", TWENTY_MS)}. `BEGIN` travels in
  the first statement's message (psycopg 3), so the work itself is 4 round trips: with values
  bound on the server, as in this request (the values the Django view's ORM sends), `BEGIN`
  and the statement go in one pipeline; without values, in one text message.
- On a Neon host name (`sync_neon_host`, through the stand-in's Neon-like proxy, as Neon's proxy
  accepts it), the connect opens TLS directly where libpq >= 17 (`sslnegotiation=direct`):
  NullPool pays {f.trips("sync_neon_host")} round trips per request, against
  {f.trips("sync_neon")} with an `SSLRequest` first. Its p50 at 20 ms RTT,
  {f.p50("sync_neon_host", TWENTY_MS)}, also holds the stand-in's proxy, Python on the same
  two cores, which ends TLS and SCRAM and then logs in to PgBouncer for each connect: compare
  its round trips, not its time.
- Async psycopg: {f.trips("apsy_neon")} against {f.trips("apsy_pool")} round trips;
  p50 {f.p50("apsy_neon")} against {f.p50("apsy_pool")} at 1 ms.
- asyncpg: {f.trips("apg_neon")} against {f.trips("apg_pool")} round trips: with the
  statement caches off (the recipe the pooler needs), every statement is prepared then
  executed, so a kept connection saves little. psycopg (client-side binding) needs far
  fewer round trips per request through the pooler than asyncpg.
- The hand-written recipe from Neon's guide (a default `QueuePool` on the pooled URL) is as
  fast as our client pool ({f.trips("sync_guide")} round trips) but it is double pooling (up
  to {f.conns("sync_guide")} client connections per process) and, with psycopg's automatic
  prepares on, requests fail through a pooler that does not track prepared statements:
  {f.errors("sync_guide")} (sync) and {f.errors("apsy_guide")} (async) in this run.
- Connections: the client pool holds 2 client connections per process at PgBouncer; NullPool
  holds one per request in flight (up to {f.conns("sync_neon")} at 64 clients). Capped at
  2 connections, the pool still served {f.rps("sync_pool")} requests/s at 64 clients against
  {f.rps("sync_neon")} for NullPool (the hand-written `QueuePool`: {f.rps("sync_guide")}).
- **Rule:** NullPool (the default) for serverless, for many processes, and for bursty load: it
  costs one connect per request, 4-6 round trips plus TLS + SCRAM CPU, i.e. about 2x the
  latency of a kept connection at 1-20 ms RTT. `allow_client_pool=True` pays off for a
  long-running process (1 ms RTT or more) that serves requests continuously: it removes the
  connect from every request for 2 client connections per process.

{_profiles(f)}

**Library overhead:** ratios of client CPU with and without neon-connect on the same path:
{f.overhead()}. The ratios move by about +-3 % between runs on this shared machine.

{_goals(f)}"""


def _profiles(f: _Figures) -> str:
    """NullPool against ``allow_client_pool=True`` on each platform kind of
    ``neon_connect._platforms``, from this run's rows: which measured row a request pays
    depends on whether the instance reuses anything, which is what the kinds differ in."""
    kept = f"{f.trips('sync_pool')} round trips, {f.p50('sync_pool', TWENTY_MS)}"
    connect = f"{f.trips('sync_neon')} round trips, {f.p50('sync_neon', TWENTY_MS)}"
    direct = f"{f.trips('sync_neon_host')} round trips, {f.p50('sync_neon_host', TWENTY_MS)}"
    return f"""**SQLAlchemy per platform** (sync psycopg, p50 at 20 ms RTT; a connect with an
`SSLRequest` pays {connect}; a kept connection pays {kept}; on a Neon host, direct TLS takes
one round trip off each connect: {direct}, through the stand-in's proxy). The platform kinds are the ones `neon-connect check` prints:

| platform (detected from) | NullPool (the default) | `allow_client_pool=True` | choose |
|---|---|---|---|
| function: Lambda, Vercel, Netlify, Azure Functions, Cloud Functions | a connect per request | the same: an instance serves one request, nothing is reused, and a kept connection sits at PgBouncer while the instance is frozen | NullPool |
| elastic: Cloud Run, ECS/Fargate, Modal | a connect per request | a kept connection while requests come closer than the idle limit (`idle_timeout="auto"`: 10 s; `pool_size` 1-2, as Neon advises), a connect after a longer gap | the client pool for steady traffic, NullPool for sparse |
| server: Fly, Render, Railway, Heroku, Kubernetes, none | a connect per request | a kept connection | the client pool for a process that serves steadily; NullPool for many processes or bursty load |
"""


def _round_trip_goals(f: _Figures) -> str:
    """Issue 24's goals (every request at the round-trip floor), read from this run."""
    fastest = min(f.value(n, TWENTY_MS) for n in ("dj_neon_240", "dj_guide", "dj_neon_default"))
    django = f.value("dj_neon_default", TWENTY_MS) / fastest
    protocol = f.results["protocol"]
    connects = {k: v for k, v in protocol.items() if k.startswith("psycopg connect to a Neon")}
    shown = "; ".join(
        f"{name.rpartition('(')[2].rstrip(')')}: {v:g}" for name, v in connects.items()
    )

    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    pool = float(f.trips("sync_pool"))
    nullpool_neon = float(f.trips("sync_neon_host"))
    return f"""**Issue 24's goals (the round-trip floor), in this run:**
- Django's default request: {f.trips("dj_neon_default")} round trips (goal 4: {met(float(f.trips("dj_neon_default")) <= 4)}),
  {django:.2f}x the fastest Django configuration at 20 ms RTT (goal 1.05x: {met(django <= 1.05)}).
- SQLAlchemy `allow_client_pool=True`: {f.trips("sync_pool")} round trips (goal 4: {met(pool <= 4)};
  this request's first statement carries a value, bound on the server; one without values
  pays 4 too, see `tests/benchmarks/test_round_trips.py`).
- SQLAlchemy `NullPool`, this request: {f.trips("sync_neon_host")} on a Neon host name, where the connect
  opens TLS directly (goal 8.5: {met(nullpool_neon <= 8.5)}); {f.trips("sync_neon")} where it sends an
  `SSLRequest` first (the stand-in's own URLs, or a libpq older than 17).
- A connect, one round trip fewer with direct TLS, shown next to the plain one: {shown}.

"""


def _goals(f: _Figures) -> str:
    rows = dict(f.results["overhead"])
    core_name, core = next(iter(rows.items()))
    rows.pop(core_name)
    # "against no ..." rows price the liveness check itself against a path that checks
    # nothing; the goal compares each path with the same configuration by hand
    unchecked = {name: v for name, v in rows.items() if ", against no " in name}
    same = {name: v for name, v in rows.items() if name not in unchecked}
    worst_name, worst = max(same.items(), key=lambda item: item[1]["ratio"])
    over = [name for name, v in same.items() if v["ratio"] > 1.02]
    verdict = (
        "met on every request path"
        if not over
        else f"met on {len(same) - len(over)} of {len(same)} request paths, not on {', '.join(over)}"
    )
    checks = "; ".join(f"{name}: {v['ratio']:.3f}" for name, v in unchecked.items())
    overhead = (
        f"{verdict} (largest ratio {worst['ratio']:.3f}, {worst_name}), each against the same "
        "configuration without neon-connect. Against a path that checks nothing at all "
        f"({checks}), the difference is the zero-round-trip liveness check, which replaces "
        "a ping of one round trip. The core path "
        f"that calls `resolve()` + `psycopg_params()` before every connect measures "
        f"{core['ratio']:.3f}: those calls cost {core['resolve_params_ms'] * 1000:.0f} us in a "
        "hot loop and more next to a connect; computed once per process (as the adapters do) "
        "they cost nothing per connect"
    )
    fastest = min(f.value("dj_neon_240"), f.value("dj_guide"), f.value("dj_neon_default"))
    django_old = f.value("dj_neon") / fastest
    django_default = f.value("dj_neon_default") / fastest
    sa_now = f.value("sync_neon") / f.value("sync_pool")
    return (
        _round_trip_goals(f)
        + f"""**The issue's goals, in this run (1 ms RTT):**
- Library overhead <= 2 %: {overhead}.
- Default within 1.10x of the fastest safe configuration: Django WSGI's shipped default
  {django_default:.2f}x ({"met" if django_default <= 1.10 else "not met"}); the old
  `CONN_MAX_AGE=0` default {django_old:.2f}x. SQLAlchemy's
  NullPool {sa_now:.2f}x of `allow_client_pool=True`: not met, by design (no client pool on
  top of PgBouncer is the product's promise); the cost is published above.
- No default with more round trips than the guide it replaces: Django's shipped default
  {f.trips("dj_neon_default")} against {f.trips("dj_guide")} (the old default
  {f.trips("dj_neon")}). SQLAlchemy NullPool
  {f.trips("sync_neon")} against {f.trips("sync_guide")} for the hand-written `QueuePool`,
  which fails requests on a pooler that does not track prepared statements; asyncpg {f.trips("apg_neon")} against {f.trips("apg_guide")} for
  SQLAlchemy's own PgBouncer recipe.

"""
    )
