"""The ``neon-connect`` command line.

``check`` and ``alembic-init``; ``local`` hands over to ``neon-local`` (the stand-in is test
tooling, in its own package). Human messages go to stderr and machine-readable output
(``--json``) to stdout. Passwords are masked everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from .errors import NeonConnectError

__all__ = ["main"]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "neon-connect",
        description="Connect Python apps to Neon: pooled for traffic, direct for sessions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "local",
        help="the local stand-in (from the neon-local package: pip install neon-local)",
        add_help=False,
    )
    check = sub.add_parser(
        "check", help="resolve the environment, connect to each endpoint, flag pitfalls"
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument("--no-connect", action="store_true", help="only resolve; do not connect")
    check.add_argument("--url", help="the app URL (default: from the environment)")
    check.add_argument("--direct-url", help="the direct URL (default: from the environment)")
    check.add_argument(
        "--allow-mismatched-endpoints",
        action="store_true",
        help="accept app and direct URLs for different endpoints (reported as a warning)",
    )
    alembic = sub.add_parser(
        "alembic-init", help="create an Alembic directory whose env.py runs on the direct endpoint"
    )
    alembic.add_argument("directory")
    alembic.add_argument(
        "--ini", default="alembic.ini", help="the alembic.ini to write (default: alembic.ini)"
    )
    alembic.add_argument(
        "--async", dest="use_async", action="store_true", help="use Alembic's async template"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["local"]:
        return _local(argv[1:], prog=f"{prog or 'neon-connect'} local")
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exc:
        # argparse has printed the usage to stderr; `check --json` still owes JSON on stdout.
        if exc.code not in (0, None) and "check" in argv and "--json" in argv:
            print(json.dumps({"ok": False, "error": "invalid command-line arguments"}))
        raise
    return guarded(lambda: _run(args), prog="neon-connect")


def guarded(command: Callable[[], int], *, prog: str) -> int:
    """Run a command the way every console script of ours ends: our errors as one line on
    stderr (exit 1), Ctrl-C as 130, a closed pipe (``| head``) quietly. ``neon-local`` too."""
    try:
        return command()
    except NeonConnectError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        return _check(args)
    if args.command == "alembic-init":
        return _alembic_init(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _alembic_init(args: argparse.Namespace) -> int:
    """SQLAlchemy and Alembic come with the ``[sqlalchemy]`` extra: without them, one line
    naming the install (as ``local`` names neon-local), never the import's traceback."""
    try:
        from neon_sqlalchemy.alembic import init

        env_py = init(
            args.directory, ini=args.ini, template="async" if args.use_async else "generic"
        )
    except ImportError as exc:
        if exc.name not in ("sqlalchemy", "alembic"):  # a broken install, not a missing extra
            raise
        print(
            "neon-connect alembic-init: SQLAlchemy and Alembic are not installed (the "
            '[sqlalchemy] extra); install them with: pip install "neon-connect[sqlalchemy]"',
            file=sys.stderr,
        )
        return 2
    print(
        f"wrote {env_py}: it runs every Alembic command on the direct endpoint",
        file=sys.stderr,
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """Never a traceback: any failure is one line (or JSON with ``error``), exit code 1."""
    from ._check import run_check

    try:
        report = run_check(
            args.url,
            direct_url=args.direct_url,
            connect=not args.no_connect,
            allow_mismatched_endpoints=args.allow_mismatched_endpoints,
        )
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: no traceback, no secret
        # Only the class name: an unexpected error's text might quote the input.
        message = f"the check failed unexpectedly ({type(exc).__name__})"
        if args.json:
            print(json.dumps({"ok": False, "configured": None, "error": message}))
        else:
            print(f"neon-connect: error: {message}", file=sys.stderr)
        return 1
    print(report.to_json() if args.json else report.to_text())
    if not report.configured:
        return 2
    return 0 if report.ok else 1


def _local(argv: list[str], *, prog: str) -> int:
    """The stand-in is test tooling: it ships in ``neon-local``, not in production installs."""
    try:
        from neon_local.cli import main as local_main
    except ImportError:
        print(
            f"{prog}: the local stand-in is in the neon-local package (test tooling, kept out "
            "of production installs); install it with: pip install neon-local",
            file=sys.stderr,
        )
        return 2
    return local_main(argv, prog=prog)
