"""``prepared_statements=True``: zero errors on a pooler that tracks prepared statements
(PgBouncer >= 1.22 with ``max_prepared_statements``, Neon's), the documented failure on 1.18."""

from __future__ import annotations

import pytest
from django.db import connections, utils

from tests.django.test_failures_reproduced import PREPARE_ERRORS, _hammer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.psycopg3_only,  # psycopg 3's automatic prepares; psycopg2 never prepares
    pytest.mark.django_db(transaction=True, databases=["default", "prepared"]),
]


def test_prepared_statements_true(neon_local):
    settings_dict = connections["prepared"].settings_dict
    assert settings_dict["OPTIONS"]["prepare_threshold"] == 1
    database = settings_dict["NAME"]  # the test database
    binds = neon_local.prepared_statement_binds(database)
    if neon_local.tracks_prepared_statements:
        assert _hammer("prepared") == []
        assert neon_local.prepared_statement_binds(database) > binds
    else:
        try:
            errors = _hammer("prepared")
        except utils.Error as exc:  # even its first INSERT can land on a backend with _pg3_0
            errors = [exc.__cause__ or exc]
        assert errors, "PgBouncer 1.18 does not track prepared statements: they collide"
        assert all(isinstance(e, PREPARE_ERRORS) for e in errors), {type(e) for e in errors}
        assert any("_pg3_" in str(e) for e in errors)
