"""Registers ``neon_django.E010`` (the app missing from ``INSTALLED_APPS``) when the backend
is imported, so ``DATABASES`` written by hand with ``ENGINE: "neon_django.backend"`` are
checked too. ``config()`` registers it as well: with no installed app that touches the
database, ``check`` runs before the backend is imported. The registry is a set, so the
check runs once however often it is registered."""

from __future__ import annotations

from django.core import checks

from neon_django._checks import check_app_installed

checks.register(check_app_installed)
