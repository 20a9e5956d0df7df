"""Write docs/reliability.md from one run's figures."""

from __future__ import annotations

import platform
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from neon_local.binaries import find_binaries, version_of

from .load import Figures
from .scenarios import Sizes
from .workers import ENDPOINT, WorkerFigures

HEADER = """# Reliability under faults: figures from one run

Written by `make resilience` (`python -m resilience`) on {date}; do not edit by hand. The run
took {elapsed:.0f} s. Every figure below comes from that one run.

- **Versions:** PostgreSQL {pg}, PgBouncer {bouncer} (transaction mode, TLS + SCRAM),
  Python {python}, psycopg {psycopg}, SQLAlchemy {sqlalchemy}, Alembic {alembic},
  Django {django}, uvicorn {uvicorn}, gunicorn {gunicorn}.
- **Machine:** {machine}, shared with other work; loopback only.
- **Load:** {clients} writer clients per scenario (at most {writes} writes each, {seconds:g} s;
  server restarts {restart:g} s). Stacks: `sync` is `neon_sqlalchemy.create_engine()` called
  from threads, `async` is `create_async_engine()` (psycopg) on one event loop, `uvicorn-*`
  is the same two served over HTTP by uvicorn, and `gunicorn-django` is a Django view
  (`neon_django.config()`) served by gunicorn with 16 threads. Cold start: a {pause:g} s
  `PAUSE`. Restarts: down {down:g} s.
  The crowd: {crowd} clients connect within {arrival:g} s, then all of them write for
  {hold:g} s, on a stand-in with `max_connections` {crowd_max} and PgBouncer pool
  {crowd_pool}.

## How to read the table

Every write is one transaction that inserts a uniquely keyed row (the key has **no** unique
constraint, so a statement sent twice would show as a doubled key). Each client records the
outcome of every key:

- **acked**: `COMMIT` returned. **Lost** counts acked keys missing from the table.
- **connect errors**: the connect step failed even after the retry. neon-connect retries
  only the connect step, and its pooler half: a statement that PgBouncer refused without
  forwarding it (after a server restart, see finding 3) is sent again on a new connection.
- **errors in tx**: a statement failed before `COMMIT` was sent. The transaction was rolled
  back and was not replayed. **Phantom** counts such keys found stored anyway. It must be 0.
- **COMMIT unknown**: `COMMIT` was sent and the connection died before the answer came back.
  The outcome is ambiguous. The column shows how many there were and, in brackets, how many
  of those rows turned out to be stored.
- **doubled**: keys stored more than once (a re-sent statement).
- **recovery**: seconds from the fault to the first acknowledged write begun after it.
- **attempts**: driver connect attempts per connect step, averaged, and the most any one
  client made in the scenario.

"""


def _cell(f: Figures) -> list[str]:
    recovery = "-" if f.recovery_s is None else f"{f.recovery_s:.2f}"
    return [
        f.stack.removeprefix("sqlalchemy-"),
        f.scenario,
        str(f.clients),
        str(f.acked),
        str(f.connect_errors),
        str(f.tx_errors),
        f"{f.commit_unknown} ({f.unknown_stored})",
        str(f.lost),
        str(f.doubled),
        str(f.phantom),
        recovery,
        f"{f.attempts_per_connect:.2f} / {f.attempts_max}",
        f"{f.p50_ms:.0f} / {f.p99_ms:.0f}",
        "ok" if f.ok else "**FAIL**",
    ]


COLUMNS = [
    "stack",
    "scenario",
    "clients",
    "acked",
    "connect errors",
    "errors in tx",
    "COMMIT unknown (stored)",
    "lost",
    "doubled",
    "phantom",
    "recovery s",
    "attempts avg / max",
    "p50 / p99 ms",
    "",
]


WORKERS = """
## Workers outside the request cycle

Task workers, management commands and long-lived processes reuse a kept connection that no
request signal replaces (issue 21). Each worker below ran alone on a stand-in of its own
(PgBouncer pool 3); a fault struck between two of its ticks, and the row counts the
{ticks} ticks after it. A tick of `django-tasks db_worker` is a task that writes a ledger row;
the loops query every 0.1 s. **By hand** is the control: the same worker on Django's own
backend (kept 240 s, `CONN_HEALTH_CHECKS` at its default, off) or on
`sqlalchemy.create_engine()` (its default pool, no pre-ping), where the issue measured the
failure. Goals: no error on a pooled connection; at most one error per fault, naming the
end of the session, for a `direct()` session; no task lost or run twice.

| worker | endpoint | set up | fault | ticks after | errors | still working | tasks done once | |
|---|---|---|---|---|---|---|---|---|
"""


def _worker_cell(r: WorkerFigures) -> list[str]:
    verdict = "**FAIL**" if r.problems else ("failed, as measured" if r.by_hand else "ok")
    return [
        r.worker,
        ENDPOINT[r.worker],
        "by hand" if r.by_hand else "neon-connect",
        r.fault,
        str(r.ticks),
        str(r.errors),
        "yes" if r.running else "**no**",
        r.tasks_once,
        verdict,
    ]


def write_report(
    path: Path,
    results: list[Figures],
    rows: list[WorkerFigures],
    *,
    sizes: Sizes,
    began: datetime,
    elapsed: float,
    machine: str,
) -> None:
    binaries = find_binaries()
    lines = [
        HEADER.format(
            date=began.strftime("%Y-%m-%d %H:%M UTC"),
            elapsed=elapsed,
            pg=version_of(binaries.postgres),
            bouncer=version_of(binaries.pgbouncer),
            python=platform.python_version(),
            psycopg=version("psycopg"),
            sqlalchemy=version("SQLAlchemy"),
            alembic=version("alembic"),
            django=version("Django"),
            uvicorn=version("uvicorn"),
            gunicorn=version("gunicorn"),
            machine=machine,
            clients=sizes.clients,
            writes=sizes.writes,
            seconds=sizes.seconds,
            pause=sizes.pause,
            down=sizes.down,
            crowd=sizes.crowd,
            crowd_max=sizes.crowd_max_connections,
            crowd_pool=sizes.crowd_pool_size,
            arrival=sizes.crowd_arrival,
            restart=sizes.restart_seconds,
            hold=sizes.crowd_hold,
        ),
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(f)) + " |" for f in results]
    lines += WORKERS.format(ticks=sizes.worker_ticks).splitlines()
    lines += ["| " + " | ".join(_worker_cell(r)) + " |" for r in rows]
    errors = [r for r in rows if r.first_error]
    if errors:
        lines += ["", "The first error each worker saw after the fault:", ""]
        lines += [
            f"- {r.worker}, {'by hand, ' if r.by_hand else ''}{r.fault}: `{r.first_error}`"
            + "".join(f" PROBLEM: {p}" for p in r.problems)
            for r in errors
        ]
    lines += ["", "## What the callers saw, per scenario", ""]
    for f in results:
        lines.append(f"- **{f.stack}, {f.scenario}:** " + "; ".join(f.notes or ["-"]) + ".")
        for error, count in f.errors.items():
            lines.append(f"  - {count} x `{error}`")
        for problem in f.problems:
            lines.append(f"  - PROBLEM: {problem}")
    path.parent.mkdir(parents=True, exist_ok=True)
    findings = (Path(__file__).parent / "findings.md").read_text()
    path.write_text("\n".join(lines) + "\n\n" + findings)
