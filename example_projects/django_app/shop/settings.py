"""Settings of the example shop: the two neon_django lines are all the database setup."""

from __future__ import annotations

import os

import neon_django

SECRET_KEY = os.environ.get("SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIDDLEWARE: list[str] = []

INSTALLED_APPS = [
    "neon_django",  # first, so its migrate (and friends) win
    "django.contrib.contenttypes",
    "django.contrib.postgres",
    "orders",
]
DATABASES = {"default": neon_django.config()}
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"neon_connect": {"handlers": ["console"], "level": "WARNING"}},
}
