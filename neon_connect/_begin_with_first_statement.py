"""``BEGIN`` travels with a transaction's first statement: one round trip, not two.

psycopg 3 opens a transaction by sending ``BEGIN`` alone and waiting for its answer before it
sends the first statement. Two ways send both at once, each keeping the protocol psycopg
would have used for the statement, so nothing about the statement changes but its timing:

- **Complete text** (client-side binding, Django's default; or no values to bind): one
  simple-protocol message, ``BEGIN; <statement>``, the protocol psycopg uses for such a
  statement alone. PostgreSQL runs them in order, as the two messages would have run. The
  cursor then moves past ``BEGIN``'s result, so it shows the statement's rows, row count and
  text. A statement PostgreSQL cannot parse fails the whole message before ``BEGIN`` runs; it
  is then sent again as psycopg would have sent it (``BEGIN`` alone first), so that it fails
  inside its transaction, as before (nothing of it ran). So is one refused at analysis
  (an unknown column), after a ``ROLLBACK`` of the empty transaction ``BEGIN`` opened: the
  error then points into the statement, not into ``BEGIN; <statement>``.
- **Values bound on the server** (SQLAlchemy's psycopg dialect): libpq's pipeline mode,
  ``BEGIN`` and the statement in the extended protocol behind one ``Sync``, written in one
  flush. The values travel apart from the SQL, typed, as before: a value is never written into
  the statement. Without prepares (the pooled endpoint's default) libpq is driven here directly,
  under the connection's lock, where psycopg decides whether a statement opens a transaction
  (:func:`_begin_then`): one flush, then the three answers read in order, which costs less
  client CPU than psycopg's ``BEGIN`` alone (one wait fewer), where psycopg's ``Pipeline``
  object cost more. With prepares on (the direct endpoint, or ``prepared_statements=True``),
  psycopg's ``Pipeline`` runs it, so its prepared-statement cache works as before.

  An error carries ``_retry.MERGED_PIPELINE``: the pipeline was this module's and is over,
  so the adapters' rerun may treat the statement as any transaction's first (a pipeline the
  app opened still refuses the rerun: an error there can belong to an earlier statement).
  When the server or PgBouncer answers with an error and closes (a terminated backend, a
  refusal after a server restart, ``query_wait_timeout``), ``BEGIN``'s answer is read first,
  so their words come through. Where only the closed connection does (psycopg's
  ``Pipeline``), the error gets the note :data:`CLOSED_AT_FIRST`; the rerun sends the
  statement with ``BEGIN`` alone (``_retry.RESENDING``), where the pooler's words come
  through and its refusal is told apart as before.

Everything else is psycopg's own path, ``BEGIN`` sent alone: autocommit, a pipeline the app
opened, ``executemany``, ``copy``, named cursors, binary results, explicit prepares
(``prepare=True``), a statement psycopg sends in the simple protocol after all (a ``Composed``
or ``bytes`` query without values, values no placeholder takes: it may hold several statements,
which the extended protocol refuses), more values than libpq sends (65535), a libpq without
pipeline mode, and a psycopg that lacks the private attributes this reads (:data:`_READS`,
:data:`_CURSOR_READS`; all there from 3.2.1, the oldest the matrix tests, to 3.3). Writing the
values into the text was tried and dropped: a value reached SQL through a placeholder in a
comment, several statements ran, floats turned into ``numeric``, and values showed in errors and
the server log.

Django installs :class:`neon_django.backend._begin_with_first_statement.BeginWithFirstStatement`
(its own client-side cursor); SQLAlchemy's engines install :class:`BeginWithFirstStatement` and
:class:`AsyncBeginWithFirstStatement` (server-side binding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.generators import fetch_many, send
from psycopg.pq import ExecStatus, Format, TransactionStatus

from ._retry import MERGED_PIPELINE, RESENDING, add_note

_READS = ("_autocommit", "_exec_command", "_get_tx_start_command", "_pipeline")
"""psycopg's private connection attributes this relies on; without them, psycopg's own path."""

_CURSOR_READS = (
    "_start_query",
    "_convert_query",
    "_execute_send",
    "_check_results",
    "_set_results",
)
"""psycopg's private cursor methods :func:`_begin_then`'s callers use (all in ``BaseCursor``)."""

_CURSOR_HAS_THEM = all(hasattr(psycopg.Cursor, name) for name in _CURSOR_READS)


def supported(connection: Any) -> bool:
    """Whether this psycopg connection has what the merge reads."""
    return _CURSOR_HAS_THEM and all(hasattr(connection, name) for name in _READS)


def begin_to_merge(cursor: Any, kwargs: dict[str, Any]) -> str | None:
    """The ``BEGIN`` command psycopg is about to send alone before this statement, or None
    where it sends none (autocommit, a transaction already open) or the merge does not apply."""
    conn = cursor.connection
    if (
        getattr(conn, RESENDING, False)  # sent again after an error: the pooler's words intact
        or kwargs.get("prepare") or kwargs.get("binary") or cursor.format == Format.BINARY
        or conn._autocommit  # noqa: SLF001 - psycopg's own flag, read as its execute does
        or conn._pipeline is not None  # noqa: SLF001
        or conn.pgconn.transaction_status != TransactionStatus.IDLE
    ):  # fmt: skip
        return None
    command: bytes = conn._get_tx_start_command()  # noqa: SLF001 - isolation, read only
    return command.decode()


@contextlib.contextmanager
def begin_held_back(connection: Any) -> Iterator[None]:
    """psycopg sends no ``BEGIN`` of its own meanwhile: it reads this flag before each
    statement. Set back after, directly: the public setter refuses inside a transaction."""
    connection._autocommit = True  # noqa: SLF001
    try:
        yield
    finally:
        connection._autocommit = False  # noqa: SLF001


def _queue_begin(connection: Any, begin: str) -> Any:
    """``BEGIN`` queued in the open pipeline as psycopg queues its own commands (its result
    checked for errors, then dropped), without a cursor or a wait of its own: it leaves with
    the statement, at the statement's flush. The generator ends at once, sending nothing."""
    return connection._exec_command(begin.encode())  # noqa: SLF001


def never_ran(connection: Any, error: BaseException) -> bool:
    """After ``error`` from ``BEGIN; <statement>``: PostgreSQL's parser refused the whole message
    before running any of it. A syntax error found while parsing has a position in the
    message and none inside a function; no transaction opened. Anything else may have run
    (a ``COMMIT`` in the statement's text also leaves no transaction open): never sent again."""
    return (
        isinstance(error, psycopg.errors.SyntaxError)
        and _points_into_the_message(error)
        and connection.pgconn.transaction_status == TransactionStatus.IDLE
    )


def _points_into_the_message(error: BaseException) -> bool:
    """The error has a position in the message sent and none inside a function: it was found
    in that text, before anything of it ran (parsing or analysis)."""
    diag = getattr(error, "diag", None)
    return bool(
        diag is not None
        and diag.statement_position is not None
        and diag.internal_position is None
        and diag.context is None
    )


def only_begin_ran(connection: Any, error: BaseException, statement: str) -> bool:
    """After ``error`` from ``BEGIN; <statement>``: ``BEGIN`` ran, and PostgreSQL refused the
    statement while analysing it (an unknown column or table, a type mismatch: class 42, with a
    position in the message and none inside a function), so none of it ran: it is one
    statement (several could have run one before the refused one). The caller rolls back the
    empty transaction and sends the statement again psycopg's way, so the error's position
    and ``LINE 1:`` excerpt are the statement's own, not shifted by ``BEGIN; ``."""
    return (
        (getattr(error, "sqlstate", None) or "").startswith("42")
        and _points_into_the_message(error)
        and connection.pgconn.transaction_status == TransactionStatus.INERROR
        and _one_statement(statement)
    )


def _one_statement(statement: str) -> bool:
    """Whether PostgreSQL's grammar (pglast) reads one statement here; False when it cannot
    tell. Read only after an error: the merge's usual path parses nothing."""
    try:
        from pglast import split

        return len(split(statement)) == 1
    except Exception:  # no pglast on this platform, or text its parser does not know
        return False


def show_the_statement(cursor: Any, statement: str) -> bool:
    """Move past ``BEGIN``'s result and show the statement's text (``cursor._query`` is what
    Django's query log and ``cursor.query`` read). False when the statement gave no result
    of its own: it was empty (blanks, comments, ``;``), and the caller sends it again alone,
    inside the open transaction, for psycopg's "empty query" result (nothing runs twice)."""
    if not cursor.nextset():
        return False
    query = cursor._query  # noqa: SLF001
    if query is not None:
        query.query = statement.encode(cursor.connection.info.encoding)
    return True


def _without_values(cursor: Any, query: Any, params: Any) -> str | None:
    """The statement as psycopg sends it in one simple-protocol message when it carries no
    values (``%%`` read as ``%`` where parameters were given, empty); None when it has some."""
    if params is None:
        return query if isinstance(query, str) else None
    if params:
        return None
    writer = (
        psycopg.AsyncClientCursor
        if isinstance(cursor, psycopg.AsyncCursor)
        else psycopg.ClientCursor
    )
    try:
        statement: str = writer(cursor.connection).mogrify(query, params)  # no values to write
    except psycopg.Error:
        return None  # a stray placeholder: psycopg's own path says so
    return statement


CLOSED_AT_FIRST = (
    "neon-connect: the connection closed at this transaction's first statement, which went "
    "with BEGIN in one pipeline: nothing of the transaction was committed. Behind PgBouncer "
    "this is most often an error of its own followed by a close (server login has been "
    "failing, after a server restart; query_wait_timeout, when no server connection freed "
    "up in time): psycopg's pipeline then reports the closed connection, not the error. "
    "With retry on (the default) the statement is sent again on a new connection, BEGIN "
    "alone, where the pooler's own words come through."
)
"""The note on an error from the pipeline when the connection is gone after it."""


def _mark(error: psycopg.Error, connection: Any) -> None:
    """Mark ``error`` as the pipeline's (``_retry.MERGED_PIPELINE``), and say what a closed
    connection there most likely means, unless the error is the server's or pooler's own."""
    setattr(error, MERGED_PIPELINE, True)
    if (connection.closed or connection.broken) and not getattr(error, "sqlstate", None):
        add_note(error, CLOSED_AT_FIRST)


_LIBPQ_MAX_PARAMS = 65535
"""The most values libpq sends with one statement; it refuses more when asked to queue it."""


def _values(cursor: Any, query: Any, params: Any) -> Any:
    """The statement converted as the cursor's ``execute`` converts it (its values dumped), or
    None where psycopg would not send it in the extended protocol with values: no values after
    all (a ``Composed``, ``bytes``, a mapping with no placeholder: the simple protocol, which
    may carry several statements) or more than libpq takes. Nothing is sent; with psycopg's
    ``BEGIN`` held back, ``_start_query`` only resets the cursor's last result."""
    for _ in cursor._start_query(query):  # noqa: SLF001
        raise AssertionError("psycopg sent BEGIN while it was held back")
    pgq = cursor._convert_query(query, params)  # noqa: SLF001
    return pgq if pgq.params and len(pgq.params) <= _LIBPQ_MAX_PARAMS else None


def _plan(cursor: Any, query: Any, params: Any, kwargs: dict[str, Any]) -> tuple[bytes, Any] | None:
    """Under the connection's lock: the ``BEGIN`` to send with the statement, and the
    statement converted (:func:`_values`); None where psycopg's own path sends it."""
    begin = begin_to_merge(cursor, kwargs)
    if begin is None:
        return None
    with begin_held_back(cursor.connection):
        pgq = _values(cursor, query, params)
    return None if pgq is None else (begin.encode(), pgq)


def _queue(cursor: Any, begin: bytes, pgq: Any, *, binary: bool | None) -> None:
    """Put ``BEGIN``, the statement and a ``Sync`` in libpq's pipeline: nothing is written yet."""
    pgconn = cursor.connection.pgconn
    pgconn.enter_pipeline_mode()
    pgconn.send_query_params(begin, None)
    cursor._execute_send(pgq, force_extended=True, binary=binary)  # noqa: SLF001
    pgconn.pipeline_sync()


def _begin_then(pgconn: Any) -> Any:
    """psycopg generator: write what :func:`_queue` put in libpq's pipeline in one flush, then
    read ``BEGIN``'s answer, the statement's and the ``Sync``'s, in that order. A server or
    pooler that answers with an error and closes: its own error, not the closed connection's."""
    yield from send(pgconn)
    answers: list[list[Any]] = []
    try:
        while len(answers) < 3:  # noqa: PLR2004 - BEGIN, the statement, the Sync
            answers.append((yield from fetch_many(pgconn)))
    except psycopg.OperationalError:
        if not any(r.status == ExecStatus.FATAL_ERROR for rs in answers for r in rs):
            raise
    answers += [[], []]  # what a close left unread
    return answers[0], answers[1]


def _leave(cursor: Any, query: Any, begun: list[Any], results: list[Any]) -> None:
    """Out of pipeline mode, with the answers: ``BEGIN``'s error first, else the statement's,
    else its rows on the cursor, as psycopg's ``execute`` leaves them."""
    try:
        cursor.connection.pgconn.exit_pipeline_mode()
    finally:  # the server's words win over a lost connection's failure to leave
        cursor._check_results(begun)  # noqa: SLF001 - raises the server's error, typed
        cursor._check_results(results)  # noqa: SLF001
    cursor._set_results(results)  # noqa: SLF001
    cursor._last_query = query  # noqa: SLF001 - psycopg's own bookkeeping after execute


def _cannot_go_on(connection: Any) -> bool:
    """After an error inside the pipeline: True when libpq cannot leave pipeline mode (a lost
    connection, answers left unread); the connection is then closed, read as lost, replaced."""
    pgconn = connection.pgconn
    if not pgconn.pipeline_status:
        return False
    with contextlib.suppress(psycopg.Error):
        pgconn.exit_pipeline_mode()
    return bool(pgconn.pipeline_status)


class BeginWithFirstStatement(psycopg.Cursor[Any]):
    """psycopg's cursor (server-side binding), sending ``BEGIN`` with a transaction's first
    statement: in one text message when it carries no values, else in one pipeline."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        begin = begin_to_merge(self, kwargs)
        if begin is None:  # psycopg's path: BEGIN alone, where it opens a transaction
            return super().execute(query, params, **kwargs)
        conn = self.connection
        statement = _without_values(self, query, params)
        if statement is None:
            if conn.prepare_threshold is None:
                sent = self._in_libpq_pipeline(query, params, kwargs)
            else:  # prepares on: psycopg's Pipeline keeps its statement cache
                sent = self._in_psycopg_pipeline(begin, query, params, kwargs)
            return self if sent else super().execute(query, params, **kwargs)
        try:
            with begin_held_back(conn):
                super().execute(f"{begin}; {statement}", **kwargs)
        except psycopg.Error as error:
            if only_begin_ran(conn, error, statement):
                conn.rollback()  # the empty transaction; then fail (or not) as psycopg would
            elif not never_ran(conn, error):
                raise
            return super().execute(query, params, **kwargs)  # fails as it would have, in BEGIN
        if not show_the_statement(self, statement):
            return super().execute(query, params, **kwargs)  # an empty statement
        return self

    def _in_libpq_pipeline(self, query: Any, params: Any, kwargs: dict[str, Any]) -> bool:
        """``BEGIN`` and the statement through libpq's pipeline (:func:`_begin_then`); False
        when psycopg's own path is to send it after all, nothing sent."""
        conn = self.connection
        with conn.lock:  # decided again where psycopg decides: under the lock
            plan = _plan(self, query, params, kwargs)
            if plan is None:
                return False
            try:
                _queue(self, *plan, binary=kwargs.get("binary"))
                begun, results = conn.wait(_begin_then(conn.pgconn))
                _leave(self, query, begun, results)
            except BaseException as error:
                if _cannot_go_on(conn):  # nothing more goes through; closed, it reads as
                    conn.close()  # lost and is replaced
                if isinstance(error, psycopg.Error):
                    _mark(error, conn)
                raise
        return True

    def _in_psycopg_pipeline(
        self, begin: str, query: Any, params: Any, kwargs: dict[str, Any]
    ) -> bool:
        """``BEGIN`` and the statement in psycopg's ``Pipeline``, its statement cache at work;
        False as :meth:`_in_libpq_pipeline` (converted to decide, then again by psycopg)."""
        conn = self.connection
        with conn.lock, begin_held_back(conn):
            if _values(self, query, params) is None:
                return False
        try:
            with conn.pipeline(), begin_held_back(conn):  # one Sync, at the pipeline's end
                conn.wait(_queue_begin(conn, begin))
                super().execute(query, params, **kwargs)
        except psycopg.Error as error:
            if conn.pgconn.pipeline_status:  # libpq could not leave it: nothing more goes
                conn.close()  # through; closed, it reads as lost and is replaced
            _mark(error, conn)
            raise
        return True


class AsyncBeginWithFirstStatement(psycopg.AsyncCursor[Any]):
    """:class:`BeginWithFirstStatement` for psycopg's async connections."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        begin = begin_to_merge(self, kwargs)
        if begin is None:  # psycopg's path: BEGIN alone, where it opens a transaction
            return await super().execute(query, params, **kwargs)
        conn = self.connection
        statement = _without_values(self, query, params)
        if statement is None:
            if conn.prepare_threshold is None:
                sent = await self._in_libpq_pipeline(query, params, kwargs)
            else:
                sent = await self._in_psycopg_pipeline(begin, query, params, kwargs)
            return self if sent else await super().execute(query, params, **kwargs)
        try:
            with begin_held_back(conn):
                await super().execute(f"{begin}; {statement}", **kwargs)
        except psycopg.Error as error:
            if only_begin_ran(conn, error, statement):
                await conn.rollback()
            elif not never_ran(conn, error):
                raise
            return await super().execute(query, params, **kwargs)
        if not show_the_statement(self, statement):
            return await super().execute(query, params, **kwargs)  # an empty statement
        return self

    async def _in_libpq_pipeline(self, query: Any, params: Any, kwargs: dict[str, Any]) -> bool:
        """See the sync twin."""
        conn = self.connection
        async with conn.lock:
            plan = _plan(self, query, params, kwargs)
            if plan is None:
                return False
            try:
                _queue(self, *plan, binary=kwargs.get("binary"))
                begun, results = await conn.wait(_begin_then(conn.pgconn))
                _leave(self, query, begun, results)
            except BaseException as error:
                if _cannot_go_on(conn):
                    await conn.close()
                if isinstance(error, psycopg.Error):
                    _mark(error, conn)
                raise
        return True

    async def _in_psycopg_pipeline(
        self, begin: str, query: Any, params: Any, kwargs: dict[str, Any]
    ) -> bool:
        """See the sync twin."""
        conn = self.connection
        async with conn.lock:
            with begin_held_back(conn):
                if _values(self, query, params) is None:
                    return False
        try:
            async with conn.pipeline():
                with begin_held_back(conn):
                    await conn.wait(_queue_begin(conn, begin))
                    await super().execute(query, params, **kwargs)
        except psycopg.Error as error:
            if conn.pgconn.pipeline_status:  # libpq could not leave it (see the sync twin)
                await conn.close()
            _mark(error, conn)
            raise
        return True


def install(connection: Any) -> None:
    """Give a new psycopg connection the merging cursor where it has psycopg's plain one (an
    app's own ``cursor_factory`` is left alone), if its libpq has pipeline mode (14+)."""
    if not supported(connection) or not psycopg.Pipeline.is_supported():
        return
    if connection.cursor_factory is psycopg.Cursor:
        connection.cursor_factory = BeginWithFirstStatement
    elif connection.cursor_factory is psycopg.AsyncCursor:
        connection.cursor_factory = AsyncBeginWithFirstStatement
