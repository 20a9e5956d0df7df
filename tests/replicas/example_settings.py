"""The README's Django set-up for read replicas, as a settings module a test runs."""

from __future__ import annotations

import neon_django
from tests.django_settings import *  # noqa: F403

DATABASES = neon_django.databases()  # default + replica_1, ... from DATABASE_URL_REPLICA
DATABASE_ROUTERS = ["neon_django.routers.ReplicaRouter"]
MIDDLEWARE = ["neon_django.routers.ReplicaStickinessMiddleware"]
