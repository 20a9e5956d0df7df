"""Placeholder until the Django adapter lands."""

from __future__ import annotations

SECRET_KEY = "tests"
INSTALLED_APPS: list[str] = []
USE_TZ = True
