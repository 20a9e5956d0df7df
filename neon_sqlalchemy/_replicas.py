"""Read replicas for SQLAlchemy: replica engines and a ``RoutingSession`` that uses them.

primary = neon_sqlalchemy.create_engine()                  # DATABASE_URL
replicas = neon_sqlalchemy.create_replica_engines()        # DATABASE_URL_REPLICA, comma-separated
Session = sessionmaker(class_=RoutingSession, primary=primary, replicas=replicas)

``RoutingSession`` sends plain SELECTs to a replica (round robin) and everything else to the
primary: flushes, ``FOR UPDATE``, INSERT/UPDATE/DELETE and text SQL (it cannot tell what text
does). Once a transaction has sent anything to the primary, its reads stay there until it
ends (read-your-writes: a replica lags). A replica that cannot be reached within its retry
budget is skipped with a warning naming it, and left out for ``retry_after`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.selectable import CompoundSelect

from neon_connect import ConfigurationError, RetryPolicy, Secret, resolve
from neon_connect._replicas import REPLICA_VAR, resolve_replicas
from neon_connect._secret import scrubbed

from ._engines import _arguments, _finish

logger = logging.getLogger("neon_sqlalchemy.replicas")

REPLICA_RETRY = RetryPolicy(timeout=2.0)
"""Replicas' connect retry: short, so a replica that is down is skipped quickly."""


@scrubbed(ConfigurationError)
def create_replica_engines(
    url: str | Secret | None = None,
    *,
    replica_urls: str | Secret | Sequence[str | Secret] | None = None,
    env: Mapping[str, str] | None = None,
    replica_var: str = REPLICA_VAR,
    prepared_statements: bool = False,
    retry: RetryPolicy = REPLICA_RETRY,
    allow_mismatched_endpoints: bool = False,
    **kwargs: Any,
) -> list[Engine]:
    """One engine per read replica of the primary (``url`` or the environment); may be empty.

    Each is built like :func:`neon_sqlalchemy.create_engine`'s pooled engine (``NullPool``,
    prepares off unless declared safe) on the replica's pooled endpoint. The replica URLs
    come from ``replica_urls`` or ``DATABASE_URL_REPLICA``; see :mod:`neon_connect._replicas`.
    """
    primary = resolve(url, env=env, allow_mismatched_endpoints=allow_mismatched_endpoints)
    replicas = resolve_replicas(replica_urls, primary=primary, env=env, var=replica_var)
    del url, replica_urls, env  # error pages print locals
    engines = []
    for endpoint in replicas:
        import sqlalchemy

        sa_url, arguments = _arguments(
            endpoint,
            "psycopg",
            dict(kwargs),
            allow_client_pool=False,
            prepared_statements=prepared_statements,
            factory="create_replica_engines",
        )
        engine = sqlalchemy.create_engine(sa_url, **arguments)
        _finish(engine, endpoint, retry, "error", None)  # NullPool: nothing kept
        engines.append(engine)
    return engines


def _plain_select(clause: Any) -> bool:
    if isinstance(clause, CompoundSelect):
        return all(_plain_select(s) for s in clause.selects)
    return isinstance(clause, Select) and clause._for_update_arg is None


class RoutingSession(Session):
    """A ``Session`` that reads from replicas and keeps read-your-writes on the primary."""

    retry_after: float = 30.0
    _down: dict[Engine, float] = {}  # shared by all sessions of the process
    _down_lock = threading.Lock()
    _turn = itertools.count()

    def __init__(self, *, primary: Engine, replicas: Sequence[Engine] = (), **kwargs: Any) -> None:
        kwargs.pop("bind", None)  # sessionmaker passes bind=None: the primary is the bind
        super().__init__(bind=primary, **kwargs)
        self.primary = primary
        self.replicas = list(replicas)
        self._wrote = False

    def close(self) -> None:
        """A closed session starts over: it may read replicas again."""
        super().close()
        self._wrote = False

    @property
    def wrote(self) -> bool:
        """Whether this session sent anything to the primary since it was opened (or closed).

        Kept past ``commit()``: with ``expire_on_commit`` the next attribute access refreshes
        the object it wrote, and that read must see the write, not a lagging replica."""
        return self._wrote

    def get_bind(
        self, mapper: Any = None, clause: Any = None, **kwargs: Any
    ) -> Engine | Connection:
        if self._flushing or not _plain_select(clause):
            self._wrote = True  # a flush, FOR UPDATE, DML or text: reads follow it here
        if self._wrote or not self.replicas:
            return self.primary
        start = next(self._turn)
        for i in range(len(self.replicas)):
            replica = self.replicas[(start + i) % len(self.replicas)]
            if self._usable(replica):
                return replica
        return self.primary

    def _usable(self, replica: Engine) -> bool:
        """Connect now (the transaction keeps the connection) so a replica that is down is skipped."""
        with self._down_lock:
            until = self._down.get(replica)
            if until is not None and time.monotonic() < until:
                return False
        try:
            self._connection_for_bind(replica, execution_options=None)
        except DBAPIError as exc:
            first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            logger.warning(
                "read replica %s:%s is unreachable (%s); reading from the primary, retrying it in %.0f s",
                replica.url.host,
                replica.url.port,
                first,
                self.retry_after,
            )
            with self._down_lock:
                self._down[replica] = time.monotonic() + self.retry_after
            return False
        return True
