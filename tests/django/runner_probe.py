"""A tiny test module run by Django's own test runner in a subprocess.

Two test classes, so ``--parallel 2`` really runs two workers on cloned databases.
"""

from __future__ import annotations

from django.test import TestCase

from tests.djangoapp.models import Item


class ProbeTests(TestCase):
    def test_orm_works(self) -> None:
        Item.objects.create(name="probe")
        self.assertEqual(Item.objects.count(), 1)


class SecondProbeTests(TestCase):
    def test_orm_works_here_too(self) -> None:
        self.assertEqual(Item.objects.count(), 0)
