"""Run Django's own test suite through neon_django on the stand-in; fail on any new failure.

    python -m tests.django_suite.run                  # the labels below, three runs
    python -m tests.django_suite.run basic queries    # other labels

Django's suite is the best oracle for "neon_django behaves like Django's PostgreSQL backend".
This script:

1. downloads the sdist of the Django that is installed (cached in ~/.cache/neon-connect);
2. starts the stand-in (PostgreSQL + PgBouncer in transaction mode, TLS + SCRAM) and, as its
   superuser, creates in ``template1`` the extensions Neon offers and ``postgres_tests`` needs;
3. runs ``tests/runtests.py`` with ``tests/django_suite/settings.py`` (both aliases from
   ``neon_django.config()``): ``--parallel 2``, then ``--keepdb`` (creating the kept
   databases) and, on Django 5.2, ``--keepdb`` again with one process (reusing them; see
   ``RUNS``);
4. compares the failures with ``by_design.py``. Any other failure, or a run that did not
   finish, fails the run and names the tests.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .by_design import BY_DESIGN, TIMING

LABELS = [
    "backends",
    "transactions",
    "migrations",
    "cache",
    "multiple_database",
    "test_runner",
    "basic",
    "queries",
    "select_for_update",
    "postgres_tests",
    "schema",
    "indexes",
    "model_fields",
    "db_functions",
    "aggregation",
    "expressions",
    "fixtures",
    "serializers",
    "admin_views",
]
# The second --keepdb run reuses the kept database with one process: reused parallel clones
# fail under Django's own backend too (they keep what the last TransactionTestCase flushed,
# Django ticket #25251; see --baseline), while the kept database itself is migrated again.
RUNS = (("--parallel", "2"), ("--parallel", "2", "--keepdb"), ("--parallel", "1", "--keepdb"))
SERIAL_KEEPDB = "5.2"
"""The Django series whose session also runs the third pass (the kept database reused by one
process); the others run the first two, which keeps the matrix inside CI's 90 minutes."""


def runs_for(version: str) -> tuple[tuple[str, ...], ...]:
    return RUNS if version.startswith(SERIAL_KEEPDB + ".") else RUNS[:2]


# What Neon lets a database owner create, and Django's postgres_tests migration creates.
EXTENSIONS = ("bloom", "btree_gin", "btree_gist", "citext", "hstore", "pg_trgm", "unaccent")
EXTENSIONS_QUOTED = ('"uuid-ossp"',)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neon-connect"
SETTINGS = Path(__file__).with_name("settings.py")

# "ERROR: test_x (app.tests.Case.test_x)" on Python 3.11+, "(app.tests.Case)" on 3.10;
# a subTest adds " (param=...)" after it.
_RESULT = re.compile(r"^(ERROR|FAIL|UNEXPECTED SUCCESS): (\S+) \(([^)\s]+)\)", re.MULTILINE)
_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)


@dataclass
class Outcome:
    """What one runtests.py run reported."""

    args: tuple[str, ...]
    ran: int | None
    failed: set[str] = field(default_factory=set)
    passed_alone: set[str] = field(default_factory=set)
    """Timing checks (``TIMING``) that failed here and passed when run again alone."""

    def unexpected(self) -> list[str]:
        return sorted(t for t in self.failed - self.passed_alone if by_design_reason(t) is None)


def settle_timing(outcome: Outcome, rerun: Callable[[list[str]], Outcome]) -> Outcome:
    """Run the failed timing checks (``TIMING``, and only those) again alone; the ones that
    pass then are not counted. ``rerun`` runs the given test ids and reports them."""
    timing = sorted(t for t in outcome.unexpected() if t in TIMING)
    if timing:
        again = rerun(timing)
        if again.ran:  # a run that did not finish settles nothing
            outcome.passed_alone = set(timing) - again.failed
        for test_id in sorted(outcome.passed_alone):
            print(f"  {test_id}: failed, then passed run again alone (a timing check)")
    return outcome


def by_design_reason(test_id: str) -> str | None:
    """The reason a failure is expected, or None when it is not."""
    for pattern, reason in BY_DESIGN.items():
        if fnmatch.fnmatchcase(test_id, pattern):
            return reason
    return None


def failures(output: str) -> set[str]:
    """Test ids of every ERROR, FAIL and UNEXPECTED SUCCESS in runtests.py's output."""
    found = set()
    for _kind, name, where in _RESULT.findall(output):
        found.add(where if where.endswith(f".{name}") else f"{where}.{name}")
    return found


def django_tests(version: str) -> Path:
    """Django's ``tests/`` folder from the sdist of ``version``, downloaded once."""
    root = CACHE / f"django-{version}"
    tests = root / "tests"
    if (tests / "runtests.py").exists():
        return tests
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            + ["--no-binary", ":all:", f"Django=={version}", "-d", tmp],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        unpacked = Path(tmp) / "src"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/tests/" in m.name]
            if sys.version_info >= (3, 12):
                tar.extractall(unpacked, members=members, filter="data")
            else:
                tar.extractall(unpacked, members=members)  # noqa: S202  # the sdist we asked pip for
        (top,) = unpacked.iterdir()
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tests, ignore_errors=True)
        shutil.move(str(top / "tests"), tests)
    return tests


def prepare_template(superuser_url: str) -> None:
    """Create the extensions ``postgres_tests`` needs in ``template1`` (the role is no
    superuser, as on Neon, where they are on the allow list), so test databases have them."""
    import psycopg

    with psycopg.connect(superuser_url.replace("/postgres", "/template1"), autocommit=True) as c:
        for name in (*EXTENSIONS, *EXTENSIONS_QUOTED):
            c.execute(f"CREATE EXTENSION IF NOT EXISTS {name}")


def run_suite(
    tests: Path, env: dict[str, str], labels: list[str], args: tuple[str, ...], tag: str = ""
) -> Outcome:
    command = [sys.executable, "runtests.py", "--settings=neon_suite_settings", "--noinput"]
    command += [*args, *labels]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(
        command, cwd=tests, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = done.stdout
    log = tests / f"neon-suite{'-'.join(a.strip('-') for a in args)}{tag}.log"
    log.write_text(output)
    ran = _RAN.search(output)
    outcome = Outcome(args=args, ran=int(ran.group(1)) if ran else None, failed=failures(output))
    summary = output.strip().splitlines()[-1:] if ran is None else []
    print(
        f"  ran {outcome.ran} tests, {len(outcome.failed)} failed "
        f"({len(outcome.failed) - len(outcome.unexpected())} by design); log: {log}",
        *summary,
        flush=True,
    )
    return outcome


def _alone(args: tuple[str, ...]) -> tuple[str, ...]:
    """The run's options with one process: ``--parallel 1``, the database kept or not as
    the run had it."""
    return ("--parallel", "1", *(a for a in args if a == "--keepdb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", nargs="*", default=LABELS)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="run Django's own backend on the direct endpoint instead, for comparison",
    )
    options = parser.parse_args(argv)

    from neon_local.standin import LocalNeon

    version = importlib.metadata.version("Django")
    tests = django_tests(version)
    shutil.copyfile(SETTINGS, tests / "neon_suite_settings.py")
    print(f"Django {version}'s suite from {tests}", flush=True)

    with tempfile.TemporaryDirectory(prefix="neon-django-suite-") as tmp:
        standin = LocalNeon(Path(tmp) / "standin", pool_size=5, max_connections=100, proxy=False)
        state = standin.up()
        try:
            prepare_template(state.superuser_url)
            root = str(Path(__file__).resolve().parents[2])
            env = {
                **os.environ,
                **state.env(),
                "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            }
            if options.baseline:
                env["NEON_SUITE_BASELINE"] = "1"
            outcomes = []
            for args in runs_for(version):

                def alone(ids: list[str], args: tuple[str, ...] = args) -> Outcome:
                    return run_suite(tests, env, ids, _alone(args), "-again")

                outcomes.append(settle_timing(run_suite(tests, env, options.labels, args), alone))
        finally:
            standin.down()

    problems = []
    for outcome in outcomes:
        where = " ".join(outcome.args)
        if outcome.ran is None or outcome.ran == 0:
            problems.append(f"[{where}] the run did not finish (see its log)")
        problems += [f"[{where}] unexpected failure: {t}" for t in outcome.unexpected()]
    if options.labels == LABELS:
        matched = {
            p for o in outcomes for t in o.failed for p in BY_DESIGN if fnmatch.fnmatchcase(t, p)
        }
        for pattern in sorted(set(BY_DESIGN) - matched):
            print(f"note: by-design entry matched no failure on Django {version}: {pattern}")
    for line in problems:
        print(line, file=sys.stderr)
    print(
        f"Django {version}: {len(outcomes)} runs, "
        + ", ".join(f"{o.ran} tests" for o in outcomes)
        + (f"; {len(problems)} problems" if problems else "; only by-design failures"),
        flush=True,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
