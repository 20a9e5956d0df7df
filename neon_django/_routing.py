"""``direct()``: send a block of code to the direct endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections


@contextlib.contextmanager
def direct(using: str = DEFAULT_DB_ALIAS) -> Iterator[Any]:
    """Run the block's queries on ``using``'s direct endpoint, in this thread or async context.

    For code that needs a real session at run time: LISTEN/NOTIFY, session advisory locks,
    ``CREATE INDEX CONCURRENTLY``, temporary tables, ``SET``, streaming ``.iterator()``. On exit
    the next query goes through the pooler again. Nesting works; it is a decorator too (of
    sync functions). In async code ``await Model.objects.aget(...)`` and ``sync_to_async``
    calls inside the block go direct; other tasks keep their own routing.

    Entering or leaving with a transaction open on the alias raises
    ``TransactionManagementError`` instead of moving the transaction between servers; after
    a refused exit the routing is back to what it was before the block, and the open
    transaction keeps its (direct) connection until it ends.
    """
    connection: Any = connections[using]
    if not hasattr(connection, "neon_direct"):
        raise ImproperlyConfigured(
            f"neon_django.direct(using={using!r}) needs DATABASES[{using!r}] = "
            "neon_django.config() (ENGINE 'neon_django.backend')."
        )
    connection.neon_refuse_in_transaction("enter")
    with connection.neon_direct():
        yield connection
    connection.neon_refuse_in_transaction("leave")  # after a normal exit only
