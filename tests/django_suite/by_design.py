"""Failures of Django's own suite that neon_django causes on purpose, each with its reason.

Keys are ``fnmatch`` patterns over test ids (``app.module.Class.test_method``). Anything that
fails and matches none of them fails ``nox -s django_suite``. A pattern that matches nothing on
some Django version (a test it does not have) is reported, not failed.
"""

from __future__ import annotations

_CURSORS = (
    "Server-side cursors are off on the pooled endpoint (DISABLE_SERVER_SIDE_CURSORS): a "
    "transaction pooler may hand the next FETCH to another server connection, where the "
    'cursor does not exist (cursor "_django_curs_..." does not exist). They stream again '
    "inside neon_django.direct()."
)
_POOL = (
    "Django's own connection pool (OPTIONS['pool']) is refused on a transaction pooler, and "
    "Django refuses a pool with persistent connections, which config() turns on for the "
    "pooled endpoint (conn_max_age='auto'). A client pool on top of PgBouncer holds server "
    "connections PgBouncer could share."
)

BY_DESIGN: dict[str, str] = {
    "backends.postgresql.test_server_side_cursors.ServerSideCursorsPostgres.*": _CURSORS,
    "backends.postgresql.tests.Tests.test_connect_pool*": _POOL,
    "backends.postgresql.tests.Tests.test_pooling_health_checks": _POOL,
}
BY_DESIGN.update(
    dict.fromkeys(
        (
            "test_runner.tests.CustomTestRunnerOptionsCmdlineTests.*",
            "test_runner.tests.CustomTestRunnerOptionsSettingsTests.*",
            "test_runner.tests.Ticket17477RegressionTests.*",
        ),
        "These tests write `DATABASES = <repr of the settings>` into a settings file for a "
        "subprocess. config() keeps secrets masked in every repr (the password shows as "
        "'****', OPTIONS as SecretParams(...)), so that repr is not Python that rebuilds a "
        "working configuration; the subprocess stops at a NameError.",
    )
)
