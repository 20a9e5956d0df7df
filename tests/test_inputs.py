"""Every bad or tricky connection input, through every entry point.

Each case runs through the core (``resolve()`` + driver parameters), ``neon_django.config()``,
``neon_sqlalchemy.create_engine()`` with psycopg and psycopg2, ``create_async_engine()`` with
psycopg and asyncpg, and ``neon-connect check --json``. For each, the outcome must be the
expected endpoint pair or the expected error naming the variable, and no form of the
case's secrets may appear in messages, reprs, chained contexts, notes, log records, warnings,
CLI output, or the local variables of neon-connect's own frames in the traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import string
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.views.debug import ExceptionReporter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import neon_django
from neon_connect import (
    ConfigurationError,
    InsecureConnectionError,
    InvalidURLError,
    MissingURLError,
    RetryPolicy,
    Secret,
    libpq_params,
    parse_url,
    psycopg_params,
    resolve,
)
from neon_connect._urls import build_url
from neon_connect.cli import main as cli_main
from neon_sqlalchemy import create_async_engine, create_engine
from tests.helpers import closed_local_port

P = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
D = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
P2 = "ep-other-thing-654321-pooler.us-east-2.aws.neon.tech"
D2 = "ep-other-thing-654321.us-east-2.aws.neon.tech"
S = "Kp9Vw2Rt5Ys8"  # the password most cases plant
ENV_VARS = (
    "DATABASE_URL",
    "DATABASE_URL_POOLED",
    "DATABASE_URL_UNPOOLED",
    "POSTGRES_URL",
    "POSTGRES_URL_NON_POOLING",
    "DIRECT_URL",
    "PGHOST",
    "PGHOST_UNPOOLED",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGCHANNELBINDING",
    "PGAPPNAME",
    "PGOPTIONS",
    "PGCONNECT_TIMEOUT",
)
OUR_PACKAGES = re.compile(r"[/\\](neon_connect|neon_django|neon_sqlalchemy)[/\\]")


@dataclass(frozen=True)
class Case:
    id: str
    url: str | None = None
    direct_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    app: str | None = None
    """The expected app host (a pair is expected when set)."""
    direct: str | None = None
    error: type[Exception] | None = None
    name: str = ""
    """The variable or argument the error must name."""
    says: str = ""
    """A fragment of the message that describes the problem."""
    secrets: tuple[str, ...] = (S,)
    allow: bool = False


def ok(id: str, url: str | None = None, app: str = P, direct: str = D, **kw: Any) -> Case:
    return Case(id=id, url=url, app=app, direct=direct, **kw)


def bad(id: str, url: str | None, error: type[Exception], says: str, **kw: Any) -> Case:
    name = kw.pop("name", "url argument")
    return Case(id=id, url=url, error=error, name=name, says=says, **kw)


def neon(host: str = P, query: str = "?sslmode=require", password: str = S, db: str = "neondb"):
    return f"postgresql://neondb_owner:{password}@{host}/{db}{query}"


URL_CASES: list[Case] = [
    # ---- accepted, routed to the right pair
    ok("console-pooled", neon()),
    ok("console-direct", neon(D)),
    ok("channel-binding", neon(query="?sslmode=require&channel_binding=require")),
    ok("upper-case-host", neon(P.upper())),
    ok("pooler-pooler", neon(P.replace("-pooler", "-pooler-pooler"))),
    ok("pooler-pooler-direct-twin", neon(P.replace("-pooler", "-pooler-pooler"), "")),
    ok(
        "quoted-at-slash-query-hash",
        neon(password=quote("ab@cd/ef?gh#ij" + S, safe="")),
        secrets=("ab@cd/ef?gh#ij" + S,),
    ),  # fmt: skip
    ok("unquoted-at-only", neon(password=f"{S}@x"), secrets=(S,)),
    ok("unquoted-colon", neon(password=f"{S}:x:y")),
    ok("explicit-port", f"postgresql://neondb_owner:{S}@{P}:5432/neondb?sslmode=require"),
    ok("postgres-scheme", neon().replace("postgresql://", "postgres://")),
    ok("driver-scheme", neon().replace("postgresql://", "postgresql+psycopg://")),
    ok(
        "keyword-dsn",
        f"host={P} user=neondb_owner password='{S} x' dbname=neondb sslmode=require",
        secrets=(f"{S} x",),
    ),  # fmt: skip
    ok("unix-socket-empty-host", f"postgresql://u:{S}@/db", app="", direct=""),
    ok(
        "socket-dir-in-query",
        f"postgresql:///db?host=/tmp&user=u&password={S}",
        app="/tmp",
        direct="/tmp",
    ),  # fmt: skip
    ok("ipv6-bracketed", f"postgresql://u:{S}@[::1]:5433/db", app="::1", direct="::1"),
    ok(
        "plain-postgres",
        f"postgresql://u:{S}@db.internal/app",
        app="db.internal",
        direct="db.internal",
    ),  # fmt: skip
    ok("asyncpg-ssl-habit", neon(query="?ssl=require")),
    ok("verify-full-system", neon(query="?sslmode=verify-full&sslrootcert=system")),
    ok("endpoint-option-matches", neon(query="?options=endpoint%3Dep-cool-darkness-123456")),
    ok("no-database-libpq-default", f"postgresql://neondb_owner:{S}@{P}?sslmode=require"),
    ok("unicode-password-raw", neon(password="Äöü中文" + S), secrets=("Äöü中文" + S,)),
    ok("space-password-quoted", neon(password=quote(S + " x", safe="")), secrets=(S + " x",)),
    ok("surrounding-whitespace", "  " + neon() + "\n"),
    ok(
        "sslpassword-masked",
        neon(query="?sslmode=require&sslpassword=Zc4Lm8Hq2"),
        secrets=(S, "Zc4Lm8Hq2"),
    ),  # fmt: skip
    ok("password-in-query", f"postgresql://{P}/neondb?user=neondb_owner&password={S}"),
    ok("settings-in-query", neon(query="?sslmode=require&application_name=web&connect_timeout=15")),
    ok("pair-matching", neon(), direct_url=neon(D)),
    ok("pair-both-direct", neon(D), direct_url=neon(D)),
    ok("split-allowed", neon(), direct_url=neon(D2), direct=D2, allow=True),
    # ---- secrets in the wrong place: refused, never turned into a host or a database
    bad(
        "at-slash-in-password",
        neon(password="ab@cd/ef" + S),
        InvalidURLError,
        "percent-encode",
        secrets=("ab@cd/ef" + S, "ef" + S),
    ),  # fmt: skip
    bad(
        "at-query-in-password",
        neon(password="ab@cd?ef" + S),
        InvalidURLError,
        "percent-encode",
        secrets=("ab@cd?ef" + S, "ef" + S),
    ),  # fmt: skip
    bad(
        "at-hash-in-password",
        neon(password="ab@cd#ef" + S),
        InvalidURLError,
        "percent-encode",
        secrets=("ab@cd#ef" + S, "ef" + S),
    ),  # fmt: skip
    bad(
        "slash-in-password",
        neon(password="ab/cd" + S),
        InvalidURLError,
        "percent-encode",
        secrets=("cd" + S,),
    ),  # fmt: skip
    bad("query-in-password", neon(password=S + "?x=1"), InvalidURLError, "percent-encode"),
    bad(
        "upper-password-key",
        f"postgresql://u@{P}/neondb?PASSWORD={S}",
        InvalidURLError,
        "'password'",
    ),  # fmt: skip
    bad(
        "mixed-password-key",
        f"postgresql://u@{P}/neondb?Password={S}",
        InvalidURLError,
        "case-sensitive",
    ),  # fmt: skip
    bad("upper-sslpassword-key", neon(query=f"?SSLPASSWORD={S}"), InvalidURLError, "sslpassword"),
    bad("keyword-dsn-bad-option", f"user:{S}@{P} dbname=neondb", InvalidURLError, "scheme"),
    bad(
        "keyword-dsn-unknown-key", f"host={P} password={S} bogus=1", InvalidURLError, "key=value"
    ),  # fmt: skip
    bad("keyword-dsn-open-quote", f"host={P} password='{S}", InvalidURLError, "key=value"),
    bad("space-in-password", neon(password=S + " x"), InvalidURLError, "space"),
    bad("newline-in-password", neon(password=S + "\nx"), InvalidURLError, "space"),
    bad("truncated-after-password", f"postgresql://u:{S}", InvalidURLError, "port"),
    bad("port-not-number", f"postgresql://u:{S}@{P}:54x2/neondb", InvalidURLError, "port"),
    bad("port-too-big", f"postgresql://u:{S}@{P}:99999/neondb", InvalidURLError, "port"),
    # ---- wrong routing that used to pass silently
    bad(
        "pair-other-endpoint",
        neon(),
        ConfigurationError,
        "different Neon endpoints",
        direct_url=neon(D2),
    ),  # fmt: skip
    bad(
        "pair-two-poolers",
        neon(),
        ConfigurationError,
        "different Neon endpoints",
        direct_url=neon(P2),
    ),  # fmt: skip
    bad(
        "pair-other-database",
        neon(),
        ConfigurationError,
        "different databases",
        direct_url=neon(D, db="other"),
    ),  # fmt: skip
    bad(
        "pair-plain-app-neon-direct",
        f"postgresql://u:{S}@pgbouncer.internal/db",
        ConfigurationError,
        "only direct_url argument is a Neon host",
        direct_url=neon(D),
    ),  # fmt: skip
    bad(
        "pair-neon-app-plain-direct",
        neon(),
        ConfigurationError,
        "only url argument is a Neon",
        direct_url=f"postgresql://u:{S}@pg.internal/db",
    ),  # fmt: skip
    bad(
        "endpoint-option-disagrees",
        neon(query="?options=endpoint%3Dep-other-thing-654321"),
        ConfigurationError,
        "options=endpoint=",
    ),  # fmt: skip
    bad(
        "upper-pgbouncer-key",
        f"postgresql://u:{S}@pooler.internal/db?PGBOUNCER=true",
        InvalidURLError,
        "'pgbouncer'",
    ),  # fmt: skip
    bad("upper-sslmode-key", neon(query="?SSLMODE=require"), InvalidURLError, "'sslmode'"),
    # ---- checked when configured
    bad("sslmode-truncated", neon(query="?sslmode=req"), InvalidURLError, "sslmode"),
    bad("sslmode-upper-value", neon(query="?sslmode=REQUIRE"), InvalidURLError, "lower case"),
    bad(
        "channel-binding-typo",
        neon(query="?channel_binding=requir"),
        InvalidURLError,
        "channel_binding",
    ),  # fmt: skip
    bad(
        "connect-timeout-word",
        neon(query="?connect_timeout=ten"),
        InvalidURLError,
        "connect_timeout",
    ),  # fmt: skip
    bad(
        "connect-timeout-unit", neon(query="?connect_timeout=10s"), InvalidURLError, "whole number"
    ),  # fmt: skip
    bad("unknown-key", neon(query="?foo=bar"), InvalidURLError, "'foo', which libpq"),
    bad("prisma-key", neon(query="?schema=public"), InvalidURLError, "Prisma"),
    bad("asyncpg-ssl-unknown", neon(query="?ssl=maybe"), InvalidURLError, "sslmode"),
    bad(
        "asyncpg-ssl-key-value",
        f"host={P} user=neondb_owner password={S} dbname=neondb ssl=require",
        InvalidURLError,
        "write sslmode=require",
    ),
    bad("residue-double-quote-db", neon(query="") + '"', InvalidURLError, "stray"),
    bad("residue-semicolon", neon() + ";", InvalidURLError, "stray"),
    bad("residue-single-quote", neon() + "'", InvalidURLError, "stray"),
    bad("question-mark-in-db", neon(db="my?db", query=""), InvalidURLError, "%3F"),
    bad("multi-host", f"postgresql://u:{S}@h1:5432,h2:5433/db", InvalidURLError, "several hosts"),
    bad("unbracketed-ipv6", f"postgresql://u:{S}@fe80::1:5432/db", InvalidURLError, "brackets"),
    bad(
        "missing-rootcert-file",
        neon(query="?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        InvalidURLError,
        "does not exist",
    ),  # fmt: skip
    bad(
        "keyword-dsn-bad-sslmode",
        f"host={P} password={S} dbname=neondb sslmode=nope",
        InvalidURLError,
        "sslmode",
    ),  # fmt: skip
    bad(
        "keyword-dsn-multi-host",
        f"host=h1,h2 password={S} dbname=db",
        InvalidURLError,
        "several hosts",
    ),  # fmt: skip
    bad("fragment", neon() + "#frag", InvalidURLError, "'#'"),
    bad(
        "weak-sslmode-on-neon",
        neon(query="?sslmode=disable"),
        InsecureConnectionError,
        "Neon requires TLS",
    ),  # fmt: skip
    # ---- paste accidents, each with its own message
    bad("single-quoted", f"'{neon()}'", InvalidURLError, "quotes"),
    bad("double-quoted", f'"{neon()}"', InvalidURLError, "quotes"),
    bad("psql-command", f"psql '{neon()}'", InvalidURLError, "psql"),
    bad("psql-unquoted", f"psql {neon()}", InvalidURLError, "psql"),
    bad("env-prefix", f"DATABASE_URL={neon()}", InvalidURLError, "'DATABASE_URL='"),
    bad("export-prefix", f'export DATABASE_URL="{neon()}"', InvalidURLError, "'DATABASE_URL='"),
    bad("jdbc", f"jdbc:postgresql://{P}/neondb?user=u&password={S}", InvalidURLError, "JDBC"),
    bad("no-scheme", f"neondb_owner:{S}@{P}/neondb", InvalidURLError, "no scheme"),
    bad("no-scheme-slashes", f"//neondb_owner:{S}@{P}/neondb", InvalidURLError, "no scheme"),
    bad("one-slash", f"postgresql:/neondb_owner:{S}@{P}/neondb", InvalidURLError, "two slashes"),
    bad("other-scheme", f"mysql://u:{S}@{P}/neondb", InvalidURLError, "scheme 'mysql'"),
    bad("empty", "", InvalidURLError, "is empty", secrets=()),
    bad("smart-quotes", f"\u201c{neon()}\u201d", InvalidURLError, "quotes"),
    bad("byte-order-mark", f"\ufeff{neon()}", InvalidURLError, "invisible"),
    bad("zero-width-in-password", neon(password=S + "\u200bx"), InvalidURLError, "invisible"),
    bad("angle-brackets", f"<{neon()}>", InvalidURLError, "angle brackets"),
    bad("residue-parenthesis", neon() + ")", InvalidURLError, "stray"),
    bad("residue-comma", neon() + ",", InvalidURLError, "stray"),
    bad("cut-after-at", f"postgresql://neondb_owner:{S}@", InvalidURLError, "cut short"),
    bad(
        "dbname-is-a-url",
        f"postgresql://u:{S}@{P}/?dbname=postgresql%3A%2F%2Fx%40{D2}%2Fdb",
        InvalidURLError,
        "looks like a connection string",
    ),  # fmt: skip
    bad(
        "encoded-upper-password-key",
        f"postgresql://u@{P}/neondb?PASS%57ORD={S}",
        InvalidURLError,
        "case-sensitive",
    ),  # fmt: skip
    bad("nul-in-password", neon(password=S + "%00x"), InvalidURLError, "NUL"),
    bad(
        "pair-vercel-storage-other",
        neon(P.replace(".us-east-2.aws.neon.tech", ".us-east-1.postgres.vercel-storage.com")),
        ConfigurationError,
        "different Neon endpoints",
        direct_url=neon(D2),
    ),  # fmt: skip
    bad(
        "keyword-dsn-empty-user",
        f"host={P} user= password={S} dbname=neondb",
        InvalidURLError,
        "'password='",
    ),  # fmt: skip
    bad(
        "keyword-dsn-run-together",
        f"host={P} user=upasswrd={S} dbname=neondb",
        InvalidURLError,
        "'='",
    ),  # fmt: skip
    bad(
        "host-with-bracket",
        f"postgresql://u:{S}@ep-cool[x-123456.us-east-2.aws.neon.tech/db",
        InvalidURLError,
        "no host name has",
    ),  # fmt: skip
    bad("bad-ipv6", f"postgresql://u:{S}@[:81]:5432/db", InvalidURLError, "IPv6"),
    bad(
        "at-in-user-and-host-chars",
        f"postgresql://u:{S}@x@{P}!/db",
        InvalidURLError,
        "no host name has",
    ),  # fmt: skip
    bad("windows-set-prefix", f"set DATABASE_URL={neon()}", InvalidURLError, "'DATABASE_URL='"),
    bad("yaml-prefix", f"DATABASE_URL: {neon()}", InvalidURLError, "'DATABASE_URL:'"),
    bad("two-urls", neon() + neon(D), InvalidURLError, "two connection strings"),
    bad(
        "console-web-address",
        "https://console.neon.tech/app/projects/x",
        InvalidURLError,
        "web address",
        secrets=(),
    ),  # fmt: skip
    bad(
        "pair-other-region",
        neon(),
        ConfigurationError,
        "different Neon endpoints",
        direct_url=neon(D.replace("us-east-2", "eu-central-1")),
    ),  # fmt: skip
    ok(
        "pair-cell-and-plain-host",
        neon(P.replace(".us-east-2", ".c-2.us-east-2")),
        direct_url=neon(D),
        app=P.replace(".us-east-2", ".c-2.us-east-2"),
    ),  # fmt: skip
    ok("socket-root-path", f"postgresql://u:{S}@/", app="", direct=""),
    ok("encoded-password-key", f"postgresql://neondb_owner@{P}/neondb?pass%77ord={S}"),
    ok("upper-case-direct-pair", neon(), direct_url=neon(D.upper())),
]


def _as_env(case: Case) -> Case | None:
    """The same URL case set through ``DATABASE_URL`` (and ``DATABASE_URL_UNPOOLED``)."""
    if case.url is None or not case.url.strip():
        return None
    env = {"DATABASE_URL": case.url}
    if case.direct_url is not None:
        env["DATABASE_URL_UNPOOLED"] = case.direct_url

    def rename(text: str) -> str:
        return text.replace("direct_url argument", "DATABASE_URL_UNPOOLED").replace(
            "url argument", "DATABASE_URL"
        )

    name, says = rename(case.name), rename(case.says)
    return Case(**{**case.__dict__, "id": f"env-{case.id}", "url": None, "direct_url": None,
                   "env": env, "name": name, "says": says})  # fmt: skip


def pg(host: str = P, **more: str) -> dict[str, str]:
    return {"PGHOST": host, "PGUSER": "neondb_owner", "PGPASSWORD": S, "PGDATABASE": "neondb",
            **more}  # fmt: skip


ENV_CASES: list[Case] = [
    ok("prisma-pair", env={"DATABASE_URL_POOLED": neon(), "DATABASE_URL": neon(D)}),
    ok("vercel-pair", env={"POSTGRES_URL": neon(), "POSTGRES_URL_NON_POOLING": neon(D)}),
    ok("pg-vars", env=pg(PGHOST_UNPOOLED=D)),
    ok("pg-vars-derived", env=pg()),
    ok("pg-vars-port", env=pg(PGPORT="5432", PGSSLMODE="require")),
    ok("direct-url-var", env={"DATABASE_URL": neon(), "DIRECT_URL": neon(D)}),
    ok(
        "pgbouncer-pair",
        app="pgbouncer.internal",
        direct="pg.internal",
        env={
            "DATABASE_URL": f"postgresql://u:{S}@pgbouncer.internal:6432/db",
            "DATABASE_URL_UNPOOLED": f"postgresql://u:{S}@pg.internal/db",
        },
    ),  # fmt: skip
    ok("empty-var-skipped", env={"DATABASE_URL": "  ", "POSTGRES_URL": neon()}),
    bad(
        "nothing-set",
        None,
        MissingURLError,
        "No database connection string",
        name="DATABASE_URL",
        secrets=(),
    ),  # fmt: skip
    bad(
        "prisma-pair-mismatch",
        None,
        ConfigurationError,
        "different Neon endpoints",
        env={"DATABASE_URL_POOLED": neon(), "DATABASE_URL": neon(D2)},
        name="DATABASE_URL_POOLED",
    ),  # fmt: skip
    bad(
        "vercel-pair-mismatch",
        None,
        ConfigurationError,
        "different Neon endpoints",
        env={"POSTGRES_URL": neon(), "POSTGRES_URL_NON_POOLING": neon(P2)},
        name="POSTGRES_URL",
    ),  # fmt: skip
    bad(
        "pg-vars-mismatch",
        None,
        ConfigurationError,
        "different Neon endpoints",
        env=pg(PGHOST_UNPOOLED=D2),
        name="PGHOST",
    ),  # fmt: skip
    bad("pghost-with-port", None, InvalidURLError, "PGPORT", env=pg(f"{P}:5432"), name="PGHOST"),
    bad("pghost-multi", None, InvalidURLError, "several hosts", env=pg(f"{P},{D}"), name="PGHOST"),
    bad("pgport-word", None, InvalidURLError, "port", env=pg(PGPORT="abc"), name="PGPORT"),
    bad(
        "pgsslmode-bogus",
        None,
        InvalidURLError,
        "sslmode",
        env=pg(PGSSLMODE="req"),
        name="PGSSLMODE",
    ),  # fmt: skip
    bad(
        "pgconnect-timeout-bogus",
        None,
        InvalidURLError,
        "whole number",
        env=pg(PGCONNECT_TIMEOUT="soon"),
        name="PGCONNECT_TIMEOUT",
    ),  # fmt: skip
    bad(
        "non-utf8-url",
        None,
        InvalidURLError,
        "UTF-8",
        env={"DATABASE_URL": neon(password=S + "\udcff")},
        name="DATABASE_URL",
    ),  # fmt: skip
    bad(
        "non-utf8-pgpassword",
        None,
        InvalidURLError,
        "UTF-8",
        env=pg(PGPASSWORD=S + "\udcfe"),
        name="PGPASSWORD",
    ),  # fmt: skip
    bad(
        "non-utf8-direct",
        None,
        InvalidURLError,
        "UTF-8",
        env={"DATABASE_URL": neon(), "DATABASE_URL_UNPOOLED": neon(D, password=S + "\udcff")},
        name="DATABASE_URL_UNPOOLED",
    ),  # fmt: skip
    bad(
        "bad-direct-var",
        None,
        InvalidURLError,
        "percent-encode",
        env={"DATABASE_URL": neon(), "DATABASE_URL_UNPOOLED": neon(D, password="a@b/c" + S)},
        name="DATABASE_URL_UNPOOLED",
        secrets=(S, "c" + S),
    ),  # fmt: skip
]

CASES = URL_CASES + [c for c in map(_as_env, URL_CASES) if c is not None] + ENV_CASES


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------- leak checks


def secret_forms(secrets: tuple[str, ...]) -> set[str]:
    forms: set[str] = set()
    for secret in secrets:
        forms |= {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
        # fragments a malformed URL could have split off (at '@', '/', '?', '#', ':', ' ')
        forms |= {p for p in re.split(r"[@/?#:&= \n'\"]", secret) if len(p) >= 6}
        forms.add(secret.encode("utf-8", "surrogateescape").decode("latin-1"))
    return {f for f in forms if f}


def assert_clean(text: str, secrets: tuple[str, ...], where: str, *, benign: str = "") -> None:
    """No form of a secret in ``text``. A form that ``benign`` (the same output for another
    password) also holds is no evidence: a fragment such as ``sslmod`` of ``Qz#sslmod=Jx``."""
    for form in secret_forms(secrets):
        if form in benign:
            continue
        assert form not in text, f"a form of the secret leaked through {where}"


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Message, repr, args, notes, and the same for every chained or suppressed context."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(a) for a in current.args)
        yield from getattr(current, "__notes__", [])
        stack += [current.__context__, current.__cause__]


def our_frame_locals(exc: BaseException) -> Iterator[str]:
    """``capture_locals`` renderings of neon-connect's own frames (chained ones too)."""
    te = traceback.TracebackException.from_exception(exc, capture_locals=True)
    pending = [te]
    while pending:
        current = pending.pop()
        for frame in current.stack:
            if OUR_PACKAGES.search(frame.filename) and frame.locals:
                yield from (f"{k}={v}" for k, v in frame.locals.items())
        pending += [e for e in (current.__context__, current.__cause__) if e is not None]


@contextlib.contextmanager
def watched(caplog: pytest.LogCaptureFixture, case: Case, where: str) -> Iterator[None]:
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        yield
    for record in caplog.records:
        assert_clean(record.getMessage(), case.secrets, f"a log record ({where})")
    for warning in caught:
        assert_clean(str(warning.message), case.secrets, f"a warning ({where})")


def expect(case: Case, where: str, run: Callable[[], tuple[str, str] | None],
           error: type[Exception]) -> None:  # fmt: skip
    """Run one entry point; check the pair or the error, and that nothing leaks."""
    try:
        got = run()
    except Exception as exc:  # noqa: BLE001 - the class is asserted right below
        assert case.error is not None, f"{where}: unexpected {type(exc).__name__}"
        assert isinstance(exc, error), f"{where}: {type(exc).__name__}, not {error.__name__}"
        if error is not ImproperlyConfigured:
            assert isinstance(exc, case.error), f"{where}: {type(exc).__name__}"
        message = str(exc)
        assert case.name in message, f"{where}: the message does not name {case.name}"
        assert case.says in message, f"{where}: the message does not say {case.says!r}"
        for text in exception_texts(exc):
            assert_clean(text, case.secrets, f"the exception ({where})")
        for text in our_frame_locals(exc):
            assert_clean(text, case.secrets, f"capture_locals ({where})")
        assert exc.__context__ is None and exc.__cause__ is None, f"{where}: chained context"
        return
    assert case.error is None, f"{where}: accepted; expected {case.error.__name__}"
    assert got == (case.app, case.direct), f"{where}: routed to {got}"


def _kw(case: Case) -> dict[str, Any]:
    kw: dict[str, Any] = {"env": case.env}
    if case.direct_url is not None:
        kw["direct_url"] = case.direct_url
    if case.allow:
        kw["allow_mismatched_endpoints"] = True
    return kw


def run_core(case: Case) -> tuple[str, str]:
    endpoints = resolve(case.url, **_kw(case))
    direct = endpoints.session()
    for endpoint in (endpoints.app, direct):
        libpq_params(endpoint)  # what every adapter builds next
    text = repr(endpoints) + str(endpoints.app) + str(direct) + endpoints.app.url()
    assert_clean(text, case.secrets, "core reprs")
    return endpoints.app.host, direct.host


def run_django(case: Case) -> tuple[str, str]:
    settings = neon_django.config(case.url, **_kw(case))
    direct = settings["NEON"]["DIRECT"] or settings
    assert settings["NAME"], "Django needs a database NAME"
    shown = repr(settings["OPTIONS"]) + repr(settings["NEON"]["DIRECT"] and
                                             settings["NEON"]["DIRECT"]["OPTIONS"])  # fmt: skip
    assert_clean(shown, case.secrets, "Django OPTIONS reprs")
    return settings["HOST"], direct["HOST"]


def _engine_pair(factory: Callable[..., Any], case: Case, url: str | None, **extra: Any):
    kw = _kw(case)
    hosts = []
    for direct in (False, True):
        engine = factory(url, direct=direct, **kw, **extra)
        sync = getattr(engine, "sync_engine", engine)
        assert_clean(repr(engine) + str(sync.url) + repr(sync.url), case.secrets, "engine reprs")
        hosts.append(sync.url.host or "")
        sync.dispose()
    return hosts[0], hosts[1]


def run_cli(case: Case, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    argv = ["check", "--json", "--no-connect"]
    if case.url is not None:
        argv.append(f"--url={case.url}")
    if case.direct_url is not None:
        argv.append(f"--direct-url={case.direct_url}")
    if case.allow:
        argv.append("--allow-mismatched-endpoints")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(argv)
    assert_clean(out.getvalue() + err.getvalue(), case.secrets, "CLI output")
    assert "Traceback" not in err.getvalue()
    report = json.loads(out.getvalue())  # always JSON with --json
    if case.error is not None:
        assert code in (1, 2) and report["ok"] is False
        if isinstance(case.error, type) and issubclass(case.error, MissingURLError):
            assert code == 2
        assert case.name in out.getvalue() and case.says in out.getvalue()
        raise case.error(out.getvalue())  # checked like the other entry points
    assert code == 0 and report["error"] is None, report
    roles = {e["role"]: e for e in report["endpoints"]}
    direct = roles.get("direct", roles["app"])
    app_host = _host_of(roles["app"]["url"])
    return app_host, _host_of(direct["url"])


def _host_of(masked_url: str) -> str:
    netloc = masked_url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
    return unquote(host.strip("[]"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_entry_point(case: Case, caplog, monkeypatch):
    with watched(caplog, case, "core"):
        expect(case, "core", lambda: run_core(case), ConfigurationError)
    with watched(caplog, case, "django"):
        expect(case, "neon_django.config", lambda: run_django(case), ImproperlyConfigured)
    sync_urls: dict[str, str | None] = {"psycopg": case.url}  # with direct_url= for pairs
    if sync_urls and case.url and case.url.strip().startswith("postgresql://"):
        sync_urls["psycopg2"] = case.url.strip().replace("postgresql://", "postgresql+psycopg2://")
    for driver, url in sync_urls.items():
        with watched(caplog, case, f"create_engine/{driver}"):
            expect(case, f"create_engine/{driver}",
                   lambda url=url: _engine_pair(create_engine, case, url), ConfigurationError)  # fmt: skip
    for adriver in ("psycopg", "asyncpg"):
        with watched(caplog, case, f"create_async_engine/{adriver}"):
            expect(case, f"create_async_engine/{adriver}",
                   lambda d=adriver: _engine_pair(create_async_engine, case, case.url, driver=d),
                   ConfigurationError)  # fmt: skip
    with watched(caplog, case, "cli"):
        expect(case, "neon-connect check", lambda: run_cli(case, monkeypatch), Exception)


# ---------------------------------------------------------------------------- any password

PASSWORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)


@given(password=PASSWORDS, quoted=st.booleans())
@example(password="#sslmod=", quoted=True)  # a fragment that "sslmode" holds anyway
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_password_quoted_or_not(password, quoted):
    """From the whole printable and Unicode range: the right endpoint, or a clean error."""
    secret = f"Qz{password}Jx"  # distinctive ends, so a leak check means something
    case = Case(id="hypothesis", url=neon(password=quote(secret, safe="") if quoted else secret),
                secrets=(secret,))  # fmt: skip
    try:
        endpoints = resolve(case.url, env={})
        settings_ = neon_django.config(case.url, env={})
    except (ConfigurationError, ImproperlyConfigured) as exc:
        # quoted, only a NUL is refused; unquoted, whatever libpq would misread
        assert not quoted or "\x00" in secret
        for text in [*exception_texts(exc), *our_frame_locals(exc)]:
            assert_clean(text, case.secrets, "the error")
        return
    # a password fragment never becomes the host, the database or a parameter
    assert (endpoints.app.host, endpoints.session().host) == (P, D)
    assert endpoints.app.database == "neondb" == settings_["NAME"]
    assert dict(endpoints.app.params) == {"sslmode": "require"}
    if quoted:
        assert endpoints.app.password == secret == settings_["PASSWORD"]
    assert_clean(_reprs(case.url), case.secrets, "reprs", benign=_reprs(neon(password="Qz0Jx")))


def _reprs(url: str) -> str:
    endpoints = resolve(url, env={})
    settings_ = neon_django.config(url, env={})
    return repr(endpoints) + str(endpoints.app) + repr(settings_["OPTIONS"])


# ---------------------------------------------------------------------------- error pages


def _bad_config() -> None:
    neon_django.config(neon(password="ab@cd/ef" + S), env={})


def test_error_pages_after_a_configuration_error():
    """Django's technical 500 page and a capture_locals traceback show no secret."""
    with pytest.raises(ImproperlyConfigured) as info:
        _bad_config()
    exc = info.value
    html = ExceptionReporter(None, type(exc), exc, exc.__traceback__).get_traceback_html()
    text = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
    for page in (html, text):
        assert "percent-encode" in page
        assert_clean(page, ("ab@cd/ef" + S, S), "an error page")


@pytest.mark.integration
def test_error_pages_after_a_failed_connect(neon_local):
    """Our frames hold only masked values, and psycopg's (which hold the conninfo in clear)
    are not in the traceback: the error is a copy raised without them."""
    import neon_connect

    parts = parse_url(neon_local.env()["DATABASE_URL"])
    wrong = "Wr0ngPassw0rdXq"
    url = build_url(host=parts.host or "", port=parts.port, user=parts.user, password=wrong,
                    database=parts.database, params=parts.params)  # fmt: skip
    with pytest.raises(psycopg.OperationalError) as info:
        neon_connect.connect(Secret(url), retry=RetryPolicy(timeout=0))
    del url
    exc = info.value
    assert "authentication failed" in str(exc)
    for text in [*exception_texts(exc), *our_frame_locals(exc)]:
        assert_clean(text, (wrong,), "our frames")
    frames = ExceptionReporter(None, type(exc), exc, exc.__traceback__).get_traceback_frames()
    ours = [f for f in frames if OUR_PACKAGES.search(f["filename"])]
    assert len(ours) >= 2  # neon_connect.connect and the retry loop
    for frame in ours:
        assert_clean(repr(frame["vars"]), (wrong,), f"the 500 page's {frame['function']} frame")
    assert not _frames_holding(exc, wrong)
    # the control: psycopg's own connect() error carries frames that hold it in clear
    with pytest.raises(psycopg.OperationalError) as plain:
        psycopg.connect(
            **psycopg_params(
                resolve(_wrong_password_url(neon_local, wrong, "postgresql"), env={}).app
            )
        )
    assert any("psycopg" in name for name in _frames_holding(plain.value, wrong))


def _wrong_password_url(neon_local, wrong: str, scheme: str) -> Secret:
    parts = parse_url(neon_local.env()["DATABASE_URL"])
    url = build_url(host=parts.host or "", port=parts.port, user=parts.user, password=wrong,
                    database=parts.database, params=parts.params, scheme=scheme)  # fmt: skip
    return Secret(url)


def _frames_holding(exc: BaseException, secret: str) -> set[str]:
    """Files whose frames (in the whole chain) show ``secret`` among their locals."""
    found: set[str] = set()
    for frame in ExceptionReporter(None, type(exc), exc, exc.__traceback__).get_traceback_frames():
        if secret in repr(frame["vars"]) and frame["filename"] != __file__:
            found.add(frame["filename"])
    return found


@pytest.mark.integration
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_failed_engine_connect_keeps_the_password_in_the_driver(neon_local, driver):
    """SQLAlchemy's cparams hold a masked value: only the driver's own frames show it."""
    import sqlalchemy

    wrong = "Wr0ngEngineXq" + driver
    engine = create_engine(_wrong_password_url(neon_local, wrong, f"postgresql+{driver}"),
                           retry=RetryPolicy(timeout=0))  # fmt: skip
    with pytest.raises(sqlalchemy.exc.OperationalError) as info:
        engine.connect()
    engine.dispose()
    for text in [*exception_texts(info.value), *our_frame_locals(info.value)]:
        assert_clean(text, (wrong,), "our frames")
    assert not _frames_holding(info.value, wrong)  # the driver's frames are not carried


@pytest.mark.integration
async def test_failed_asyncpg_connect_keeps_the_password_in_the_driver(neon_local):
    wrong = "Wr0ngAsyncpgXq"
    engine = create_async_engine(_wrong_password_url(neon_local, wrong, "postgresql"),
                                 driver="asyncpg", retry=RetryPolicy(timeout=0))  # fmt: skip
    with pytest.raises(Exception) as info:  # noqa: PT011 - asyncpg's auth error class
        async with engine.connect():
            pass
    await engine.dispose()
    assert "authentication failed" in str(info.value)
    for text in [*exception_texts(info.value), *our_frame_locals(info.value)]:
        assert_clean(text, (wrong,), "our frames")
    assert not _frames_holding(info.value, wrong)  # asyncpg's frames are not carried


URL_SHAPED = st.one_of(
    st.text(max_size=80),
    st.builds(lambda s: "postgresql://" + s, st.text(max_size=80)),
    st.builds(
        lambda a, b, c: f"postgresql://{a}@{b}/{c}",
        st.text(string.printable, max_size=20),
        st.text(string.printable, max_size=30),
        st.text(string.printable, max_size=30),
    ),
    st.builds(lambda s: f"host={P} " + s, st.text(string.printable, max_size=40)),
)


@given(text=URL_SHAPED)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_gives_an_endpoint_or_our_error(text):
    """No ValueError, ParseError or TypeError from a library underneath: ours, or a result."""
    for run, errors in (
        (lambda: resolve(text, env={}), ConfigurationError),
        (lambda: neon_django.config(text, env={}), ImproperlyConfigured),
        (lambda: create_engine(text, env={}).dispose(), ConfigurationError),
    ):
        with contextlib.suppress(errors):
            run()


@pytest.mark.integration
def test_failed_django_connect_keeps_the_password_in_the_driver(neon_local, django_db_blocker):
    """Django's own connect() frame holds conn_params: the backend hands it a masked value."""
    from django.db import OperationalError, connections
    from django.db.backends.postgresql.base import DatabaseWrapper as PlainWrapper

    from neon_django.backend.base import DatabaseWrapper

    wrong = "Wr0ngDjangoXq"
    settings_ = neon_django.config(_wrong_password_url(neon_local, wrong, "postgresql"),
                                   env={}, retry=RetryPolicy(timeout=0))  # fmt: skip
    settings_ = connections.configure_settings({"default": settings_})["default"]  # its defaults
    found = {}
    # the control: Django's own backend with the password as a hand-written dict holds it
    by_hand = {**settings_, "PASSWORD": str(settings_["PASSWORD"]), "NEON": None}
    for name, wrapper_class, dict_ in (
        ("ours", DatabaseWrapper, settings_),
        ("plain", PlainWrapper, by_hand),
    ):
        wrapper = wrapper_class(dict_, alias=f"wrong_{name}")
        with django_db_blocker.unblock(), pytest.raises(OperationalError) as info:
            wrapper.ensure_connection()
        wrapper.close()
        found[name] = _frames_holding(info.value, wrong)
    assert not found["ours"], found["ours"]  # neither Django's frames nor the driver's
    # the control: Django's own backend keeps it in clear in its connect() frame, and the
    # driver's frames (psycopg's or psycopg2's) too
    assert any(name.endswith("django/db/backends/base/base.py") for name in found["plain"])
    assert any("psycopg" in name for name in found["plain"]), found["plain"]


@pytest.mark.integration
def test_failed_django_connect_with_a_direct_twin_keeps_the_password_in_the_driver(
    neon_local, django_db_blocker
):
    """With a direct endpoint known, NEON["DIRECT"] travels through our connect() frame too:
    both PASSWORD values are masked values, so only the driver's frames show them."""
    from django.db import OperationalError, connections

    from neon_django.backend.base import DatabaseWrapper

    wrong = "Wr0ngTwinXq"
    pooled = _wrong_password_url(neon_local, wrong, "postgresql").reveal() + "&pgbouncer=true"
    direct = _wrong_password_url(neon_local, wrong, "postgresql").reveal()
    direct = direct.replace(f":{neon_local.state.pooler_port}/", f":{neon_local.state.pg_port}/")
    settings_ = neon_django.config(Secret(pooled), direct_url=Secret(direct), env={},
                                   retry=RetryPolicy(timeout=0), allow_mismatched_endpoints=True)  # fmt: skip
    del pooled, direct
    assert settings_["NEON"]["DIRECT"] is not None
    settings_ = connections.configure_settings({"default": settings_})["default"]
    wrapper = DatabaseWrapper(settings_, alias="wrong_twin")
    with django_db_blocker.unblock(), pytest.raises(OperationalError) as info:
        wrapper.ensure_connection()
    wrapper.close()
    assert not _frames_holding(info.value, wrong)


@pytest.mark.integration
@pytest.mark.parametrize("failure", ["wrong password", "stopped port"])
def test_django_debug_500_page_after_a_failed_connect(
    neon_local, django_db_blocker, monkeypatch, failure
):
    """The page Django shows with DEBUG=True for a failed connect: no frame shows the
    password, for a refused login and for a port nobody listens on."""
    from django.db import OperationalError, connections

    import neon_django.backend.base as backend

    password = "Wr0ng500PageXq" if failure == "wrong password" else neon_local.state.password
    url = _wrong_password_url(neon_local, password, "postgresql").reveal()
    if failure == "stopped port":
        url = url.replace(f":{neon_local.state.pooler_port}/", f":{closed_local_port()}/")
    settings_ = neon_django.config(Secret(url), env={}, retry=RetryPolicy(timeout=0))
    del url
    settings_ = connections.configure_settings({"default": settings_})["default"]

    def page(alias: str) -> str:
        wrapper = backend.DatabaseWrapper(settings_, alias=alias)
        with django_db_blocker.unblock(), pytest.raises(OperationalError) as info:
            wrapper.ensure_connection()
        wrapper.close()
        exc = info.value
        html = ExceptionReporter(None, type(exc), exc, exc.__traceback__).get_traceback_html()
        # the frames and their locals; the settings table below shows the test project's own
        # DATABASES, which Django's settings filter governs
        frames, marker, _ = html.partition('id="requestinfo"')
        assert marker and "Local vars" in frames
        return frames

    html = page("page_fixed")
    assert "neon_django/backend/base.py" in html and "get_new_connection" in html
    assert password not in html
    # the control: the same path with the driver's frames kept shows it, in psycopg's frame
    monkeypatch.setattr(backend, "call_without_driver_frames", lambda connect: connect())
    assert password in page("page_unfixed")
