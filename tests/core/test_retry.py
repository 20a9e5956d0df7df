from __future__ import annotations

import asyncio
import logging
import ssl
import time

import psycopg
import pytest

from neon_connect import RetryPolicy, is_refused_before_forwarding, is_transient, resolve
from tests.constants import SECRET

ENDPOINT = resolve(
    f"postgresql://u:{SECRET}@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
).app
FAST = RetryPolicy(timeout=2.0, initial_delay=0.01, max_delay=0.05)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (
            psycopg.OperationalError(
                'connection to server at "h", port 5432 failed: Connection refused'
            ),
            True,
        ),
        (psycopg.OperationalError("connection failed: timeout expired"), True),
        (psycopg.OperationalError("ERROR: Couldn't connect to compute node"), True),
        (
            psycopg.OperationalError(
                "connection failed: ERROR: Failed to connect to the compute node"
            ),
            True,
        ),
        (psycopg.OperationalError("FATAL: the database system is starting up"), True),
        (
            psycopg.OperationalError("FATAL: terminating connection due to administrator command"),
            True,
        ),
        (psycopg.OperationalError("ERROR: no more connections allowed (max_client_conn)"), True),
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (asyncio.TimeoutError(), True),
        (psycopg.OperationalError('FATAL: password authentication failed for user "u"'), False),
        (psycopg.OperationalError('FATAL: database "nope" does not exist'), False),
        (psycopg.OperationalError('FATAL: role "nope" does not exist'), False),
        (psycopg.OperationalError("ERROR: Endpoint ID is not specified"), False),
        (psycopg.OperationalError("FATAL: unsupported startup parameter: options"), False),
        (ValueError("bad"), False),
        # A pooler or server going down or coming back mid-handshake (issue 12).
        (
            psycopg.OperationalError("connection failed: SSL error: unexpected eof while reading"),
            True,
        ),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (psycopg.OperationalError("could not send startup packet: Broken pipe"), True),
        (psycopg.OperationalError("FATAL: the database system is shutting down"), True),
        (psycopg.OperationalError("FATAL: the database system is in recovery mode"), True),
        (psycopg.OperationalError("ERROR: pgbouncer cannot connect to server"), True),
        (
            psycopg.OperationalError(
                "ERROR: server login has been failing, try again later (server_login_retry)"
            ),
            True,
        ),
        (psycopg.OperationalError("ERROR: query_wait_timeout"), True),
        (OSError("connection was closed in the middle of operation"), True),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)"), True),
        # The server's own connection limit: waiting does not help; a pooler does.
        (psycopg.OperationalError("FATAL: sorry, too many clients already"), False),
        (
            psycopg.OperationalError(
                "FATAL: remaining connection slots are reserved for non-replication superuser connections"
            ),
            False,
        ),
        (psycopg.OperationalError("SSL error: certificate verify failed"), False),
    ],
)
def test_classification(exc, transient):
    assert is_transient(exc) is transient


def test_retries_transient_errors_then_succeeds(caplog):
    calls = []

    def connect():
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.OperationalError("connection failed: Connection refused")
        return "conn"

    with caplog.at_level(logging.WARNING, logger="neon_connect"):
        assert FAST.call(connect, endpoint=ENDPOINT) == "conn"
    assert len(calls) == 3
    assert len(caplog.records) == 2
    assert "pooled endpoint ep-cool-darkness-123456-pooler" in caplog.text
    assert SECRET not in caplog.text


def test_never_retries_authentication_errors():
    calls = []

    def connect():
        calls.append(1)
        raise psycopg.OperationalError(
            f'FATAL: password authentication failed for user "u" ({SECRET})'
        )

    with pytest.raises(psycopg.OperationalError) as info:
        FAST.call(connect, endpoint=ENDPOINT)
    assert len(calls) == 1
    notes = "\n".join(info.value.__notes__)
    assert "pooled endpoint ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech:5432" in notes
    assert "one Neon connection string" in notes
    assert SECRET not in str(info.value)


def test_total_time_is_bounded_and_the_last_error_names_the_endpoint():
    policy = RetryPolicy(timeout=0.3, initial_delay=0.02, max_delay=0.05)
    calls = []

    def connect():
        calls.append(1)
        raise psycopg.OperationalError("connection failed: Connection refused")

    with pytest.raises(psycopg.OperationalError) as info:
        policy.call(connect, endpoint=ENDPOINT)
    assert 3 <= len(calls) <= 30
    assert "attempts" in info.value.__notes__[-1]


def test_zero_timeout_turns_retrying_off():
    calls = []

    def connect():
        calls.append(1)
        raise psycopg.OperationalError("Connection refused")

    with pytest.raises(psycopg.OperationalError):
        RetryPolicy(timeout=0).call(connect, endpoint=ENDPOINT)
    assert len(calls) == 1


async def test_async_retry():
    calls = []

    async def connect():
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionRefusedError(111, "Connection refused")
        return "conn"

    assert await FAST.acall(connect, endpoint=ENDPOINT) == "conn"
    assert len(calls) == 2


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match="timeout"):
        RetryPolicy(timeout=-1)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


def test_a_full_direct_endpoint_fails_at_once_and_points_to_the_pooled_one():
    direct = resolve(
        f"postgresql://u:{SECRET}@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb"
    ).session()
    calls = []

    def connect():
        calls.append(1)
        raise psycopg.OperationalError("FATAL: sorry, too many clients already")

    with pytest.raises(psycopg.OperationalError) as info:
        FAST.call(connect, endpoint=direct)
    assert len(calls) == 1
    assert "send app traffic to the pooled endpoint" in info.value.__notes__[-1]
    with pytest.raises(psycopg.OperationalError) as info:
        FAST.call(connect, endpoint=ENDPOINT)  # on the pooled endpoint that hint would mislead
    assert "pooled endpoint (DATABASE_URL" not in "\n".join(info.value.__notes__)


class _Closed:
    """A driver connection after PgBouncer closed it (psycopg's ``broken``)."""

    broken = True


class _Open:
    broken = False
    closed = False


REFUSAL = psycopg.errors.ProtocolViolation(
    "server login has been failing, cached error: connect failed (server_login_retry)"
)


@pytest.mark.parametrize(
    ("exc", "connection", "refused"),
    [
        (REFUSAL, _Closed(), True),
        (REFUSAL, _Open(), False),  # the same words on a live connection: the server's own
        (psycopg.errors.RaiseException("server login has been failing"), _Closed(), False),
        (psycopg.OperationalError("SSL connection has been closed unexpectedly"), _Closed(), False),
        (
            psycopg.OperationalError("terminating connection due to administrator command"),
            _Closed(),
            False,
        ),
    ],
)
def test_what_counts_as_refused_before_forwarding(exc, connection, refused):
    assert is_refused_before_forwarding(exc, connection) is refused


def test_a_refused_statement_is_sent_again_within_the_budget_then_gives_up_with_a_note():
    sent = []

    def rerun():
        sent.append(1)
        raise REFUSAL

    policy = RetryPolicy(timeout=0.3, initial_delay=0.02, max_delay=0.05)
    with pytest.raises(psycopg.errors.ProtocolViolation) as info:
        policy.rerun_refused(
            rerun, refused=REFUSAL, is_refusal=lambda e: e is REFUSAL, endpoint=ENDPOINT
        )
    assert 3 <= len(sent) <= 30
    assert "refused the statement without forwarding it" in info.value.__notes__[-1]


def test_another_error_from_a_rerun_is_raised_at_once():
    sent = []

    def rerun():
        sent.append(1)
        raise psycopg.errors.UniqueViolation("duplicate key")

    with pytest.raises(psycopg.errors.UniqueViolation):
        FAST.rerun_refused(
            rerun, refused=REFUSAL, is_refusal=lambda e: e is REFUSAL, endpoint=ENDPOINT
        )
    assert len(sent) == 1


def test_the_reconnects_of_a_refused_statement_share_its_budget():
    """A reconnect inside a rerun gets what is left of the rerun's budget, not a new one."""
    policy = RetryPolicy(timeout=5.0, initial_delay=0.05, max_delay=0.05)
    seen = []

    def rerun():
        moment = time.monotonic()  # the budget is read after it: never more than 5 s - elapsed
        seen.append((moment, policy.budget()))
        if len(seen) < 3:
            raise REFUSAL
        return "sent"

    assert (
        policy.rerun_refused(
            rerun, refused=REFUSAL, is_refusal=lambda e: e is REFUSAL, endpoint=ENDPOINT
        )
        == "sent"
    )
    first = seen[0][0]
    for moment, budget in seen:
        assert budget <= 5.0 - (moment - first)
    assert seen[-1][1] < 5.0 - 0.04  # two waits of at least 0.025 s each came off
    assert policy.budget() == 5.0  # outside a rerun: the policy's own


def test_a_reconnect_after_the_budget_ran_out_tries_once():
    """The reconnect's own retry loop uses the shared budget: spent, it makes one attempt."""
    policy = RetryPolicy(timeout=0.3, initial_delay=0.01, max_delay=0.01)
    attempts = []

    def connect():
        attempts.append(1)
        raise psycopg.OperationalError("connection failed: Connection refused")

    def rerun():
        time.sleep(0.35)  # past the rerun's deadline
        return policy.call(connect, endpoint=ENDPOINT)

    with pytest.raises(psycopg.OperationalError):
        policy.rerun_refused(
            rerun, refused=REFUSAL, is_refusal=lambda e: e is REFUSAL, endpoint=ENDPOINT
        )
    assert attempts == [1]  # a budget of its own would have tried for another 0.3 s
