"""Statements that would leave session state on a transaction pooler's server connection.

Behind PgBouncer in transaction mode, a server connection serves another client as soon as
a transaction ends. A plain ``SET search_path``, a session advisory lock, ``LISTEN``, a
``WITH HOLD`` cursor or a temp table outlives the transaction and meets the next client:
one tenant's request runs in another tenant's schema. PgBouncer documents each of these as
unsupported in transaction mode; nothing tells the client. :func:`leak` names the state a
statement would leave, so the adapters stop it before it is sent.

Statements are classified with PostgreSQL's own grammar (pglast, which wraps libpg_query),
so words inside strings, comments and identifiers never count. A cheap pre-filter keeps
ordinary statements away from the parser, and the answer is cached per SQL text, which
ORMs repeat. Where pglast cannot be imported the guard is off and says so once.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import Any, Literal

from .errors import ConfigurationError, SessionStateError

GuardMode = Literal["error", "warn", "off"]
GUARD_MODES: tuple[GuardMode, ...] = ("error", "warn", "off")

TRACKED_PARAMETERS = frozenset(
    {"client_encoding", "datestyle", "timezone", "intervalstyle"}
    | {"standard_conforming_strings", "application_name"}
)
"""What PgBouncer sets again for each client (``track_extra_parameters`` adds IntervalStyle)."""

_SESSION_LOCKS = frozenset(
    {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock"}
    | {"pg_try_advisory_lock_shared"}
)
_FIRST_WORDS = frozenset({"set", "prepare", "listen", "declare", "create"})
_CURSOR_OPT_HOLD = 0x0020
_PLACEHOLDER = re.compile(r"%%|%(?:\([^)]*\))?[sbt]")
_log = logging.getLogger("neon_connect.session_guard")

_FIX = {
    "set": "use SET LOCAL inside a transaction (Django: atomic(); SQLAlchemy: begin()), "
    "set_config(name, value, true), ALTER ROLE ... SET for a default",
    "set_config": "pass true as set_config's third argument, inside a transaction",
    "lock": "use pg_advisory_xact_lock() inside a transaction",
    "temp": "add ON COMMIT DROP and create it inside a transaction",
    "session": "run it on the direct endpoint (neon_django.direct(), or create_engine(direct=True))",
}


@functools.lru_cache(maxsize=4096)
def leak(sql: str) -> str | None:
    """What ``sql`` would leave on the server connection (with the fix), or None if nothing.

    Cached per SQL text: an ORM sends the same few texts again and again, so the usual cost
    is one dictionary lookup.
    """
    if not _worth_parsing(sql):
        return None
    return _classify(sql)


def guard_mode(value: object, *, setting: str) -> GuardMode:
    """``value`` as a guard mode, or a ConfigurationError naming ``setting``."""
    for mode in GUARD_MODES:
        if value == mode:
            return mode
    raise ConfigurationError(
        f"{setting}={value!r}: use one of " + ", ".join(repr(m) for m in GUARD_MODES) + "."
    )


def check_statement(sql: str, *, mode: GuardMode, where: str) -> None:
    """Stop (``error``) or log (``warn``) a statement that would leak session state.

    ``where`` names the alias or engine, for the message and its switch.
    """
    found = leak(sql)
    if found is None:
        return
    message = (
        f"{found}. On {where}, which goes through a transaction pooler (PgBouncer), the next "
        "client would inherit it. Turn this guard to 'warn' or 'off' with session_guard= only "
        "if you know it is harmless."
    )
    if mode == "error":
        raise SessionStateError(message)
    _log.warning("%s", message)


_READ_ONLY_NOTE = (
    "neon-connect: SQLSTATE 25006 through a transaction pooler: this server connection was left "
    "read-only by a client that ran SET default_transaction_read_only (or SET SESSION "
    "CHARACTERISTICS AS TRANSACTION READ ONLY) through the pooler, and PgBouncer handed it on. "
    "Find that client (session_guard='error' stops it), and use SET LOCAL inside a transaction "
    "for a read-only transaction; the state goes when the server connection is closed."
)
_QUERY_WAIT_NOTE = (
    "neon-connect: PgBouncer's query_wait_timeout (120 s on Neon): every server connection of "
    "this pool stayed busy that long, so this client was never served. Look for long or idle "
    "transactions holding them (pg_stat_activity, state 'idle in transaction'), or a pool too "
    "small for the load; the pooled endpoint's pool is sized from the compute's max_connections."
)


def explain_pooler_error(error: BaseException, *, into: BaseException | None = None) -> str | None:
    """Add a note naming the cause of an error that means something else behind a pooler.

    For errors raised on a connection through a transaction pooler. The note goes to
    ``into`` (the exception the adapter raises; ``error`` itself by default), once.
    """
    target = error if into is None else into
    for exc in (error, error.__cause__):
        if exc is None:
            continue
        sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        note = None
        if sqlstate == "25006":
            note = _READ_ONLY_NOTE
        elif "query_wait_timeout" in str(exc):
            note = _QUERY_WAIT_NOTE
        if note is not None:
            notes = list(getattr(target, "__notes__", []))
            if note not in notes:
                setattr(target, "__notes__", [*notes, note])  # noqa: B010
            return note
    return None


def _worth_parsing(sql: str) -> bool:
    """A cheap look: most statements are none of these and never reach the parser."""
    head = sql.lstrip(" \t\r\n(").split(None, 1)[0].lower() if sql.strip() else ""
    if head in _FIRST_WORDS:
        return True
    lowered = sql.lower()
    return "advisory_lock" in lowered or "set_config" in lowered or ";" in sql


def _classify(sql: str) -> str | None:
    try:
        from pglast import parse_sql
    except ImportError:  # no wheel for this platform: say so once, then stay out of the way
        _unavailable()
        return None
    try:
        statements = parse_sql(_PLACEHOLDER.sub(_placeholder, sql))
    except Exception:  # not PostgreSQL the parser knows: the server will answer for it
        return None
    for raw in statements:
        found = _statement_leak(raw.stmt)
        if found is not None:
            return found
    return None


def _placeholder(match: re.Match[str]) -> str:
    """psycopg's ``%s``/``%(name)s`` as PostgreSQL's ``$1``, and ``%%`` as ``%``."""
    return "%" if match.group() == "%%" else "$1"


@functools.lru_cache(maxsize=1)
def _unavailable() -> None:
    _log.warning(
        "neon-connect's session guard is off: pglast (PostgreSQL's parser) cannot be imported "
        "on this platform. Statements that leave session state on the pooler are not stopped."
    )


def _statement_leak(stmt: Any) -> str | None:
    from pglast import ast, enums

    if isinstance(stmt, ast.VariableSetStmt):
        if stmt.is_local:
            return None
        if stmt.kind == enums.VariableSetKind.VAR_SET_MULTI:
            if stmt.name == "SESSION CHARACTERISTICS":
                return f"SET SESSION CHARACTERISTICS changes every later transaction ({_FIX['session']})"
            return None  # SET TRANSACTION ...: this transaction only
        if stmt.kind not in (
            enums.VariableSetKind.VAR_SET_VALUE,
            enums.VariableSetKind.VAR_SET_CURRENT,
        ):
            return None  # RESET, SET ... TO DEFAULT: they take state away
        name = (stmt.name or "").lower()
        if name in TRACKED_PARAMETERS:
            return None  # PgBouncer sets it again for each client
        if name in ("role", "session_authorization"):
            return f"SET {name.upper().replace('_', ' ')} changes who later clients are ({_FIX['session']})"
        return f"SET {name} outlives the transaction ({_FIX['set']})"
    if isinstance(stmt, ast.PrepareStmt):
        return f"PREPARE {stmt.name} leaves a prepared statement ({_FIX['session']})"
    if isinstance(stmt, ast.ListenStmt):
        return f"LISTEN {stmt.conditionname} registers the server connection, not you ({_FIX['session']})"
    if isinstance(stmt, ast.DeclareCursorStmt) and (stmt.options or 0) & _CURSOR_OPT_HOLD:
        return f"DECLARE ... WITH HOLD keeps cursor {stmt.portalname} open ({_FIX['session']})"
    temp = _temp_table(stmt, ast, enums)
    if temp is not None:
        return f"CREATE TEMP TABLE {temp} outlives the transaction ({_FIX['temp']}, or {_FIX['session']})"
    return _call_leak(_calls(stmt))


def _temp_table(stmt: Any, ast: Any, enums: Any) -> str | None:
    if isinstance(stmt, ast.CreateStmt):
        relation, on_commit = stmt.relation, stmt.oncommit
    elif isinstance(stmt, ast.CreateTableAsStmt) and stmt.into is not None:
        relation, on_commit = stmt.into.rel, stmt.into.onCommit
    else:
        return None
    if relation.relpersistence != "t" or on_commit == enums.OnCommitAction.ONCOMMIT_DROP:
        return None
    return str(relation.relname)


def _calls(stmt: Any) -> list[Any]:
    from pglast.visitors import Visitor

    class Calls(Visitor):
        def __init__(self) -> None:
            self.found: list[Any] = []

        def visit_FuncCall(self, ancestors: Any, node: Any) -> None:
            self.found.append(node)

    calls = Calls()
    calls(stmt)
    return calls.found


def _call_leak(calls: Iterable[Any]) -> str | None:
    for call in calls:
        name = str(call.funcname[-1].sval).lower()
        if name in _SESSION_LOCKS:
            return f"{name}() takes a session lock that stays on the server connection ({_FIX['lock']})"
        if name == "set_config" and _is_false(call.args):
            return f"set_config(..., false) outlives the transaction ({_FIX['set_config']})"
    return None


def _is_false(args: Any) -> bool:
    """Whether set_config's third argument is the constant false (a placeholder may be true)."""
    if not args or len(args) < 3:
        return False
    from pglast import ast

    value = args[2]
    if not isinstance(value, ast.A_Const) or value.isnull:
        return False
    constant = value.val
    if isinstance(constant, ast.Boolean):
        return not constant.boolval
    if isinstance(constant, ast.String):
        return str(constant.sval).lower() in ("false", "f", "off", "no", "n", "0")
    if isinstance(constant, ast.Integer):
        return constant.ival == 0
    return False
