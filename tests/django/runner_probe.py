"""A tiny test module run by Django's own test runner in a subprocess."""

from __future__ import annotations

from django.test import TestCase

from tests.djangoapp.models import Item


class ProbeTests(TestCase):
    def test_orm_works(self) -> None:
        Item.objects.create(name="probe")
        self.assertEqual(Item.objects.count(), 1)
