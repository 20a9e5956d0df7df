"""The ``neon-local`` command line (also ``python -m neon_local`` and ``neon-connect local``).

Human messages go to stderr and machine-readable output (``export`` lines, ``--json``) to
stdout, so ``eval "$(neon-local up)"`` works. Passwords are masked everywhere except in the
``export`` lines, whose whole purpose is to hand the stand-in's credentials to a shell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from neon_connect.cli import guarded

from . import DEFAULT_DIR
from .errors import PgBouncerTooOld

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else list(argv))
    return guarded(lambda: _run(args), prog=prog or "neon-local")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    local = argparse.ArgumentParser(
        prog=prog or "neon-local",
        description="A local stand-in for Neon's pooled and direct endpoints: PostgreSQL "
        "plus PgBouncer in transaction mode, TLS and SCRAM.",
    )
    actions = local.add_subparsers(
        dest="action", required=True, metavar="{up,env,status,down,fault}"
    )
    for name, text in (
        ("up", "start PostgreSQL + PgBouncer and print export lines"),
        ("env", "print the export lines again"),
        ("status", "say what runs"),
        ("down", "stop both servers and remove the state folder"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"state folder (default: {DEFAULT_DIR})")
        if name == "up":
            p.add_argument(
                "--pool-size", type=int, default=5, help="PgBouncer default_pool_size (default: 5)"
            )
            p.add_argument(
                "--max-connections",
                type=int,
                default=100,
                help="PostgreSQL max_connections (default: 100)",
            )
            p.add_argument(
                "--replicas",
                type=int,
                default=0,
                metavar="N",
                help="also start N streaming read replicas, each with its own PgBouncer "
                "(exported as DATABASE_URL_REPLICA, comma-separated)",
            )
            p.add_argument(
                "--database",
                action="append",
                default=[],
                metavar="NAME",
                help="also create database NAME (repeatable), exported as DATABASE_URL_<NAME> "
                "and DATABASE_URL_<NAME>_UNPOOLED; e.g. one for Alembic beside Django's",
            )
            p.add_argument("--pg-port", type=int, help="direct port (default: a free one)")
            p.add_argument("--pooler-port", type=int, help="pooled port (default: a free one)")
            p.add_argument(
                "--no-proxy",
                action="store_true",
                help="export URLs straight to PgBouncer and PostgreSQL, without the Neon-like "
                "proxy in front of them (direct TLS, channel binding); also NEON_LOCAL_PROXY=off",
            )
            p.add_argument(
                "--pgbouncer",
                metavar="PATH",
                help="PgBouncer binary (default: $NEON_LOCAL_PGBOUNCER, else the first >= 1.22 "
                "found; when there is none, up builds 1.24.1 into the cache once)",
            )
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON")
    fault = actions.add_parser("fault", help="inject a fault (cold start, suspend, restart...)")
    fault.add_argument("--dir", default=DEFAULT_DIR, help=f"state folder (default: {DEFAULT_DIR})")
    from .faults import add_fault_arguments

    add_fault_arguments(fault)
    return local


def _run(args: argparse.Namespace) -> int:
    from .standin import LocalNeon

    if args.action == "up":
        local = LocalNeon(
            args.dir,
            pool_size=args.pool_size,
            max_connections=args.max_connections,
            pg_port=args.pg_port,
            pooler_port=args.pooler_port,
            pgbouncer=args.pgbouncer,
            databases=args.database,
            proxy=False if args.no_proxy else None,
        )
        was_running = local.status()["running"]
        try:
            state = local.up()
        except PgBouncerTooOld:
            if args.pgbouncer or os.environ.get("NEON_LOCAL_PGBOUNCER"):
                raise
            from .pgbouncer_build import build_pgbouncer

            print("neon-connect: no PgBouncer >= 1.22 here; building one", file=sys.stderr)
            build_pgbouncer(progress=lambda line: print(f"  {line}", file=sys.stderr))
            state = local.up()
        from .replica import load_replicas, replica_export_lines, start_replicas

        replicas = start_replicas(state, max(args.replicas - len(load_replicas(state)), 0))
        print(
            ("already running" if was_running else "started") + f" in {local.directory}",
            file=sys.stderr,
        )
        if was_running and state.proxied != local.proxied():
            print(
                "neon-local: the running stand-in "
                + ("has" if state.proxied else "has no")
                + " Neon-like proxy, whatever this up asked; run `neon-local down` first to "
                "change that",
                file=sys.stderr,
            )
        print(state.describe() + "".join(r.describe() for r in replicas), end="", file=sys.stderr)
        print(state.export_lines() + replica_export_lines(replicas), end="")
        return 0
    local = LocalNeon(args.dir)
    if args.action == "env":
        saved = local.state()
        if saved is None or not local.status()["running"]:
            print(
                f"neon-connect: nothing runs in {local.directory}; run: neon-connect local up",
                file=sys.stderr,
            )
            return 1
        from .replica import load_replicas, replica_export_lines

        print(saved.export_lines() + replica_export_lines(load_replicas(saved)), end="")
        return 0
    if args.action == "fault":
        saved = local.state()
        if saved is None or not local.status()["running"]:
            print(f"neon-connect: nothing runs in {local.directory}", file=sys.stderr)
            return 1
        from .faults import run_fault

        print(run_fault(saved, args), file=sys.stderr)
        return 0
    if args.action == "status":
        status = local.status()
        if args.json:
            print(json.dumps(status, indent=2))
        elif status["running"]:
            print(
                f"running in {status['directory']}\n"
                f"pooled: {status['pooled']} (PgBouncer {status['pgbouncer_version']}, "
                f"max_prepared_statements {status['max_prepared_statements']})\n"
                f"direct: {status['direct']} (PostgreSQL {status['postgres_version']})"
                + ("\nboth through the Neon-like proxy" if status["proxy"] else "")
            )
        else:
            parts = [name for name in ("postgres", "pgbouncer", "proxy") if status[name]]
            print(
                f"not running in {status['directory']}"
                + (f" (only {', '.join(parts)} is up)" if parts else "")
            )
        return 0 if status["running"] else 3
    removed = local.down()
    print(
        ("stopped and removed " if removed else "nothing to stop in ") + str(local.directory),
        file=sys.stderr,
    )
    return 0
