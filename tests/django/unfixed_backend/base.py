"""The controls for the test-database life cycle: neon_django's backend as the last release had it.

- ``OldSettingsWrapper``: ``settings_dict`` was a property over a private attribute, with no
  deleter, so ``mock.patch.object(connection, "settings_dict", ...)`` could not restore it.
- ``DjangosHealthCheckWrapper``: before the liveness check, Django's own health check ran
  (also the control of the worker tests, tests/resilience/test_task_workers.py).
- ``OldCreationWrapper``: a test database left by an earlier run (``--keepdb``, ``--reuse-db``)
  was replaced with Django's plain ``DROP DATABASE``, which PgBouncer's idle server
  connections refuse; so was one that a session of the run still held.

Used as ``ENGINE`` with ``NEON_TESTS_MODE=unfixed`` (tests/django_settings.py);
``NEON_TESTS_UNFIXED`` names the part taken out (``settings_dict`` or ``creation``).
"""

from __future__ import annotations

import os
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.creation import DatabaseCreation as DjangoCreation

from neon_django.backend import base
from neon_django.backend._creation import DatabaseCreation


class OldSettingsWrapper(base.DatabaseWrapper):
    @property
    def settings_dict(self) -> dict[str, Any]:
        settings = self._old_settings
        neon = settings.get("NEON")
        if neon is None or neon["DIRECT"] is None or not self._neon_routed_direct():
            return settings
        return base._DirectSettings(settings, neon["DIRECT"])

    @settings_dict.setter
    def settings_dict(self, value: dict[str, Any]) -> None:
        self._old_settings = value

    @property
    def _neon_own_settings(self) -> dict[str, Any]:
        return self._old_settings


class DjangosHealthCheckWrapper(base.DatabaseWrapper):
    """Django's own health check: once per request (a SELECT 1), never outside requests."""

    close_if_health_check_failed = BaseDatabaseWrapper.close_if_health_check_failed


class OldCreation(DatabaseCreation):
    _create_test_db = DjangoCreation._create_test_db
    _destroy_test_db = DjangoCreation._destroy_test_db


class OldCreationWrapper(base.DatabaseWrapper):
    creation_class = OldCreation


DatabaseWrapper = {
    "settings_dict": OldSettingsWrapper,
    "creation": OldCreationWrapper,
    "liveness": DjangosHealthCheckWrapper,
}[os.environ.get("NEON_TESTS_UNFIXED", "settings_dict")]
