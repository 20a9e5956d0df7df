"""Suspends, cold starts and errors inside transactions."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.core import signals
from django.db import DatabaseError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler

import neon_django
from neon_connect import CommitNotSent, CommitOutcomeUnknown, RetryPolicy
from neon_django.backend.base import DatabaseWrapper
from resilience.load import LEDGER_DDL, describe
from tests.constants import SECRET
from tests.resilience import SLOW_COMMIT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, databases=["default", "persistent", "handwritten"]),
]


def _backend_pid(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(neon_local, pid):
    with neon_local.superuser() as su:
        # waits for the backend to exit: its goodbye is on the client's socket, as it is
        # long before a connection is reused after a real suspend
        assert su.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0] is True


def test_persistent_connection_killed_by_a_suspend_is_replaced_on_the_next_request(neon_local):
    db = connections["persistent"]
    assert db.settings_dict["CONN_MAX_AGE"] == 60 and db.settings_dict["CONN_HEALTH_CHECKS"] is True
    with neon_django.direct("persistent"):
        pid = _backend_pid("persistent")
        signals.request_finished.send(sender=None)
        assert db.connection is not None  # kept between requests
        _terminate(neon_local, pid)  # what a compute suspend does to an idle session
        signals.request_started.send(sender=None)  # the health check sees it is dead
        assert _backend_pid("persistent") != pid


def test_without_health_checks_the_dead_connection_is_still_replaced(neon_local):
    """The liveness check costs no round trip, so it runs without CONN_HEALTH_CHECKS too
    (the control, Django's own check, is in tests/resilience/test_worker_loops.py)."""
    db = connections["persistent"]
    db.settings_dict["CONN_HEALTH_CHECKS"] = False
    try:
        with neon_django.direct("persistent"):
            pid = _backend_pid("persistent")
            signals.request_finished.send(sender=None)
            _terminate(neon_local, pid)
            signals.request_started.send(sender=None)
            assert _backend_pid("persistent") != pid
    finally:
        db.settings_dict["CONN_HEALTH_CHECKS"] = True
        db.close()


def test_an_error_inside_a_transaction_surfaces_and_is_not_replayed(neon_local):
    with neon_django.direct():
        pid = _backend_pid("default")
        with pytest.raises(OperationalError), transaction.atomic():
            _terminate(neon_local, pid)
            _backend_pid("default")
    assert _backend_pid("default")  # the next use connects again


def test_connect_waits_out_a_cold_start(neon_local):
    """PgBouncer PAUSE holds new server work like a waking compute; the query then goes through."""
    connections["default"].close()
    with neon_local.admin() as admin:
        admin.execute(f"PAUSE {connections['default'].settings_dict['NAME']}")
        timer = threading.Timer(
            1.0, lambda: admin.execute(f"RESUME {connections['default'].settings_dict['NAME']}")
        )
        timer.start()
        try:
            assert _backend_pid("default")
        finally:
            timer.join()


def test_refused_connect_is_retried_and_named(caplog):
    """Retry logs and the final note name the endpoint config() resolved (no password)."""
    settings = neon_django.config(
        f"postgresql://u:{SECRET}@127.0.0.1:1/db?pgbouncer=true", retry=RetryPolicy(timeout=0.5)
    )
    db = ConnectionHandler({"default": settings})["default"]
    with pytest.raises(OperationalError) as info:
        db.ensure_connection()
    cause = info.value.__cause__
    assert "pooled endpoint 127.0.0.1:1" in "\n".join(getattr(cause, "__notes__", []))
    assert "retry" in caplog.text
    assert SECRET not in caplog.text


# -- faults under load: the connect retry covers the whole connection set-up ------------------

THREADS = 6  # per alias
FAULT_ROUNDS = 3


def _old_connect(self):
    """The backend before the fix, for the control: only the driver's connect was retried."""
    from django.db.backends.postgresql import base as django_base

    neon = self.neon
    endpoint = neon["ENDPOINTS"].session() if self.neon_wants_direct else neon["ENDPOINTS"].app
    policy = neon["RETRY"]
    get_new = self.get_new_connection
    self.get_new_connection = lambda params: policy.call(lambda: get_new(params), endpoint=endpoint)
    try:
        django_base.DatabaseWrapper.connect(self)
    finally:
        del self.get_new_connection


class _Seen:
    """What the callers saw: errors per phase, and which keys were acknowledged or failed."""

    def __init__(self) -> None:
        self.connect: list[str] = []
        self.tx: list[str] = []
        self.acked: set[str] = set()
        self.failed: set[str] = set()  # a definite failure: must not be stored
        self.unknown: set[str] = set()  # CommitOutcomeUnknown: stored or not, once at most


def _django_load(neon_local, run: str, faults) -> _Seen:
    """Django threads on both aliases write ledger rows (one atomic() per request) while
    ``faults`` run, with a request's signals around each, as under a threaded server.
    ``default`` connects per request here (``CONN_MAX_AGE=0``), ``persistent`` keeps its
    connection: faults then land both in connects and in kept connections."""
    seen = _Seen()
    stop = threading.Event()
    default = connections["default"].settings_dict
    kept_for = default["CONN_MAX_AGE"]
    default["CONN_MAX_AGE"] = 0

    def client(alias: str, number: int) -> None:
        try:
            for n in range(10_000):  # bounded; stop ends it first
                if stop.is_set():
                    return
                key = f"{alias}-{number}-{n}"
                signals.request_started.send(sender=None)
                try:
                    connections[alias].ensure_connection()
                except Exception as exc:
                    seen.connect.append(describe(exc))
                    signals.request_finished.send(sender=None)
                    continue
                try:
                    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
                        cur.execute(
                            "INSERT INTO ledger (run, key, client) VALUES (%s, %s, %s)",
                            [run, key, number],
                        )
                    seen.acked.add(key)
                except Exception as exc:
                    seen.tx.append(describe(exc))
                    unknown = isinstance(exc.__cause__, CommitOutcomeUnknown)
                    (seen.unknown if unknown else seen.failed).add(key)
                finally:
                    signals.request_finished.send(sender=None)
                time.sleep(0.005)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=client, args=(alias, number), daemon=True)
        for alias in ("default", "persistent")
        for number in range(THREADS)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        faults()
        time.sleep(0.5)  # traffic after the last fault
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        connections.close_all()  # this thread's connections went down with the pooler too
        default["CONN_MAX_AGE"] = kept_for
    assert not any(t.is_alive() for t in threads)
    return seen


def _suspends_and_pooler_restarts(neon_local) -> None:
    database = connections["default"].settings_dict["NAME"]
    for _ in range(FAULT_ROUNDS):
        time.sleep(0.25)
        neon_local.faults.suspend(database)
        time.sleep(0.25)
        neon_local.faults.restart_pooler(down_for=0.2)


def _stored(run: str) -> list[str]:
    with connections["default"].cursor() as cur:
        cur.execute("SELECT key FROM ledger WHERE run = %s", [run])
        return [key for (key,) in cur.fetchall()]


@pytest.fixture
def ledger():
    with connections["default"].cursor() as cur:
        for ddl in LEDGER_DDL:
            cur.execute(ddl)


def _check_ledger(seen: _Seen, run: str) -> None:
    stored = _stored(run)
    assert len(stored) == len(set(stored))  # nothing written twice: no statement replayed
    assert seen.acked <= set(stored)  # nothing acknowledged was lost
    assert not seen.failed & set(stored)  # a transaction cut mid-way failed and stayed undone


def test_suspends_and_pooler_restarts_under_load_cost_no_connect_error(neon_local, ledger):
    run = uuid.uuid4().hex
    seen = _django_load(neon_local, run, lambda: _suspends_and_pooler_restarts(neon_local))
    assert seen.connect == []  # outside a transaction, no caller saw the faults
    assert seen.tx  # inside one, the faults did cut transactions: those callers were told
    assert len(seen.acked) > 50
    _check_ledger(seen, run)


def test_control_retrying_only_the_driver_connect_leaves_connect_errors(
    neon_local, ledger, monkeypatch
):
    monkeypatch.setattr(DatabaseWrapper, "connect", _old_connect)
    # and Django's own health check: the liveness check would replace a connection cut
    # during Django's set-up (set_autocommit runs it) before the set-up used it
    monkeypatch.setattr(
        DatabaseWrapper,
        "close_if_health_check_failed",
        BaseDatabaseWrapper.close_if_health_check_failed,
    )
    for _attempt in range(3):  # a race to reproduce: a few bounded tries
        run = uuid.uuid4().hex
        seen = _django_load(neon_local, run, lambda: _suspends_and_pooler_restarts(neon_local))
        _check_ledger(seen, run)
        if seen.connect:
            break
    # e.g. SET TIME ZONE (init_connection_state) on a connection the pooler's death has cut
    assert seen.connect, seen.tx


# -- a COMMIT cut with its connection -----------------------------------------------------------


def _commit_cut_by_a_suspend(neon_local, alias: str) -> DatabaseError:
    with connections["default"].cursor() as cur:
        cur.execute(SLOW_COMMIT)
    database = connections[alias].settings_dict["NAME"]
    timer = threading.Timer(0.3, lambda: neon_local.faults.suspend(database))
    with (
        pytest.raises(DatabaseError) as info,
        transaction.atomic(using=alias),
        connections[alias].cursor() as cur,
    ):
        cur.execute("INSERT INTO slow_commits VALUES (%s)", [uuid.uuid4().hex])
        timer.start()
    timer.join()
    connections[alias].close()
    return info.value


@pytest.mark.psycopg3_only
def test_a_commit_cut_by_a_suspend_says_the_outcome_is_unknown(neon_local):
    error = _commit_cut_by_a_suspend(neon_local, "default")
    assert isinstance(error, OperationalError)  # Django's own: existing handlers still match
    assert isinstance(error.__cause__, CommitOutcomeUnknown)
    assert "may or may not be committed" in str(error) and "before retrying" in str(error)


def _ended_before_commit(neon_local, alias: str) -> tuple[DatabaseError, int]:
    """A transaction whose backend a suspend ended before Django sent COMMIT: the error, and
    how many of its rows were stored."""
    with connections["default"].cursor() as cur:
        cur.execute(SLOW_COMMIT)
    key = uuid.uuid4().hex
    database = connections[alias].settings_dict["NAME"]
    with (
        pytest.raises(DatabaseError) as info,
        transaction.atomic(using=alias),
        connections[alias].cursor() as cur,
    ):
        cur.execute("INSERT INTO slow_commits VALUES (%s)", [key])
        assert neon_local.faults.suspend(database) >= 1
        time.sleep(0.2)
    connections[alias].close()
    with connections["default"].cursor() as cur:
        cur.execute("SELECT count(*) FROM slow_commits WHERE k = %s", [key])
        return info.value, cur.fetchone()[0]


@pytest.mark.psycopg3_only
def test_a_transaction_ended_before_commit_is_reported_not_stored(neon_local):
    """Nothing sent, a certain outcome: safe to run again (it was "may or may not")."""
    error, stored = _ended_before_commit(neon_local, "default")
    assert isinstance(error, OperationalError)
    assert isinstance(error.__cause__, CommitNotSent)
    assert "nothing of the transaction was stored" in str(error)
    assert stored == 0


@pytest.mark.psycopg3_only
def test_control_django_alone_sends_that_commit_and_hides_the_outcome(neon_local):
    error, stored = _ended_before_commit(neon_local, "handwritten")  # Django's own backend
    assert not isinstance(error.__cause__, CommitNotSent)
    assert "nothing of the transaction was stored" not in str(error)
    assert stored == 0


@pytest.mark.psycopg3_only
def test_control_django_alone_gives_the_driver_error_for_that_commit(neon_local):
    error = _commit_cut_by_a_suspend(neon_local, "handwritten")  # Django's own backend
    assert not isinstance(error.__cause__, CommitOutcomeUnknown)
    assert "may or may not" not in str(error)
    assert "received 2 results" in str(error) or "terminating connection" in str(error)
