"""Tests run by Django's own runner (and pytest-django) in a subprocess, touching the connection
the ways Django's suite and users' suites do. Not collected by our pytest run itself.

``SpawnRunner`` runs ``--parallel`` workers with ``spawn`` (macOS's default) instead of ``fork``.
"""

from __future__ import annotations

import multiprocessing
from typing import Any
from unittest import mock

from django.db import connection
from django.test import TestCase, TransactionTestCase
from django.test.runner import DiscoverRunner

from tests.djangoapp.models import Item


class SpawnRunner(DiscoverRunner):
    def __init__(self, **kwargs: Any) -> None:
        multiprocessing.set_start_method("spawn", force=True)
        super().__init__(**kwargs)


class PatchedSettingsTests(TestCase):
    def test_a_patched_settings_dict_is_restored(self) -> None:
        name = connection.settings_dict["NAME"]
        with mock.patch.object(
            connection, "settings_dict", {**connection.settings_dict, "NAME": "postgres"}
        ):
            self.assertEqual(connection.settings_dict["NAME"], "postgres")
        self.assertEqual(connection.settings_dict["NAME"], name)

    def test_the_connection_still_reaches_the_test_database(self) -> None:
        Item.objects.create(name="after the patch")
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            self.assertEqual(cursor.fetchone()[0], connection.settings_dict["NAME"])


class CopyTests(TestCase):
    def test_a_copy_reaches_the_same_database(self) -> None:
        copy = connection.copy()
        try:
            with copy.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                self.assertEqual(cursor.fetchone()[0], connection.settings_dict["NAME"])
        finally:
            copy.close()


class SerializedRollbackTests(TransactionTestCase):
    serialized_rollback = True
    available_apps = ["tests.djangoapp"]

    def test_rows_written_then_flushed(self) -> None:
        Item.objects.create(name="flushed after this test")
        self.assertEqual(Item.objects.count(), 1)

    def test_flushed_before_this_one(self) -> None:
        self.assertEqual(Item.objects.count(), 0)


class LeftOpenTests(TestCase):
    def test_a_connection_left_in_a_transaction(self) -> None:
        """A run that fails leaves sessions behind; the test database is dropped anyway."""
        leaked = connection.copy()
        leaked.set_autocommit(False)
        with leaked.cursor() as cursor:
            cursor.execute("SELECT 1")
        _LEAKED.append(leaked)  # never closed while the process lives


_LEAKED: list[Any] = []
