"""Each pooler failure: reproduced with a hand-written alias, gone with neon_django.config().

The pool has room for several server connections, and a second client holds the backend a
connection just used, so its next transaction really lands on another backend (PgBouncer
reuses server connections LIFO, which otherwise hides these bugs).
"""

from __future__ import annotations

import threading

import psycopg.errors
import pytest
from django.db import connections, utils

from neon_django._checks import check_databases
from tests.djangoapp.models import Item

ALL = ["default", "binding", "handwritten"]
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, databases=ALL)]


def _iterate_across_backends(alias, neon_local):
    Item.objects.using(alias).bulk_create(Item(name=f"n{i}") for i in range(5))
    it = Item.objects.using(alias).iterator(chunk_size=1)
    first = next(it)
    # The backend that holds the cursor goes back to PgBouncer; another client takes it.
    with neon_local.hold_server_connection(connections[alias].settings_dict["NAME"]):
        rest = list(it)
    return [first, *rest]


# psycopg warns that the broken server cursor could not be closed: part of the failure.
# Depending on when garbage collection runs it arrives in either of these two forms.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:<psycopg.ServerCursor object:ResourceWarning")
def test_iterator_fails_by_hand_with_invalid_cursor_name(neon_local):
    assert connections["handwritten"].settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is False
    # Django's wrapper, or the driver's own error when closing the lost cursor fails too
    driver_error = connections["handwritten"].Database.Error
    with pytest.raises((utils.DatabaseError, driver_error)) as info:
        _iterate_across_backends("handwritten", neon_local)
    # SQLSTATE 34000 invalid_cursor_name, whichever driver Django runs on
    codes = {getattr(e, "sqlstate", None) or getattr(e, "pgcode", None) for e in _chain(info.value)}
    assert "34000" in codes
    assert 'cursor "_django_curs_' in str(info.value) and "does not exist" in str(info.value)


def _chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_iterator_works_with_config(neon_local):
    assert connections["default"].settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert len(_iterate_across_backends("default", neon_local)) == 5


# ProtocolViolation: "bind message supplies N parameters, but prepared statement requires M"
PREPARE_ERRORS = (
    psycopg.errors.DuplicatePreparedStatement,
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.ProtocolViolation,
)


def _hammer(alias, threads=4, rounds=40):
    """The same parametrised query many times from several threads; returns the errors seen."""
    Item.objects.using(alias).create(name="x")
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(n):
        try:
            barrier.wait(timeout=10)
            for i in range(rounds):
                try:
                    Item.objects.using(alias).filter(name="x", value__gte=i % 3).count()
                except utils.Error as exc:
                    errors.append(exc.__cause__ or exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


@pytest.mark.psycopg3_only  # psycopg 3's automatic prepares; psycopg2 never prepares
def test_prepared_statements_collide_by_hand_unless_the_pooler_tracks_them(neon_local):
    """PgBouncer 1.18 passes statement names through: psycopg's ``_pg3_N`` collide. PgBouncer
    >= 1.22 with ``max_prepared_statements`` (Neon's) tracks them: the same alias just works."""
    errors = _hammer("handwritten")
    if neon_local.tracks_prepared_statements:
        assert errors == []
        return
    assert errors, "expected prepared-statement errors through the pooler"
    assert all(isinstance(e, PREPARE_ERRORS) for e in errors), {type(e) for e in errors}
    assert any("_pg3_" in str(e) for e in errors)


@pytest.mark.psycopg3_only  # psycopg 3's server-side binding and prepares
def test_server_side_binding_through_config_prepares_nothing_and_edits_are_checked():
    settings_dict = connections["binding"].settings_dict
    assert settings_dict["OPTIONS"]["server_side_binding"] is True
    assert settings_dict["OPTIONS"]["prepare_threshold"] is None
    assert _hammer("binding") == []
    connections["binding"].ensure_connection()
    assert connections["binding"].connection.prepare_threshold is None
    # prepares switched on by editing the settings after config(): the system check says so
    settings_dict["OPTIONS"]["prepare_threshold"] = 1
    try:
        assert "neon_django.E003" in [m.id for m in check_databases()]
    finally:
        settings_dict["OPTIONS"]["prepare_threshold"] = None
    assert "neon_django.E003" not in [m.id for m in check_databases()]
