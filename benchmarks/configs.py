"""The configurations measured side by side: what we ship, what users write by hand, the floor."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONFIGS", "Config"]


@dataclass(frozen=True)
class Config:
    name: str  # also the DATABASES alias / route and the application_name
    server: str  # "wsgi" (gunicorn, threads), "asgi" (uvicorn, Django), "sa" (uvicorn, ASGI app)
    kind: str
    label: str
    group: str
    direct: bool = False  # the app endpoint is PostgreSQL itself, not PgBouncer
    neon_host: bool = False  # a Neon host name, through the stand-in's TLS front (direct TLS)

    @property
    def path(self) -> str:
        return f"/django/{self.name}" if self.server in ("wsgi", "asgi") else f"/sa/{self.name}"


CONFIGS: tuple[Config, ...] = (
    Config(
        "dj_neon",
        "wsgi",
        "neon",
        "neon_django.config(conn_max_age=0) (per request, the old default)",
        "Django WSGI",
    ),
    Config(
        "dj_neon_default",
        "wsgi",
        "neon_default",
        "neon_django.config() (default: 240 s, health checks)",
        "Django WSGI",
    ),
    Config(
        "dj_neon_240",
        "wsgi",
        "neon_persistent",
        "neon_django.config(conn_max_age=240, health checks)",
        "Django WSGI",
    ),
    Config("dj_guide", "wsgi", "guide", "Neon guide by hand (600 s, health checks)", "Django WSGI"),
    Config(
        "dj_direct", "wsgi", "direct", "stock Django, direct endpoint", "Django WSGI", direct=True
    ),
    Config(
        "asgi_neon",
        "asgi",
        "neon",
        "neon_django.config(conn_max_age=0) (per request, the old default)",
        "Django ASGI",
    ),
    Config(  # Django's own backend: neon_django's ASGI close skips it, as before the fix
        "asgi_neon_240",
        "asgi",
        "neon_persistent+stock",
        "conn_max_age=240, health checks, no ASGI close (stock backend)",
        "Django ASGI",
    ),
    Config(
        "asgi_neon_240_fix",
        "asgi",
        "neon_default",
        "neon_django.config() (default: 240 s, closed at the end of each ASGI request)",
        "Django ASGI",
    ),
    Config(
        "sync_neon", "sa", "sync_neon", "neon create_engine() (NullPool)", "SQLAlchemy sync psycopg"
    ),
    Config(
        "sync_neon_host",
        "sa",
        "sync_neon",
        "neon create_engine() (NullPool), a Neon host name: direct TLS",
        "SQLAlchemy sync psycopg",
        neon_host=True,
    ),
    Config(
        "sync_pool", "sa", "sync_pool", "neon allow_client_pool=True", "SQLAlchemy sync psycopg"
    ),
    Config(
        "sync_guide", "sa", "sync_guide", "by hand: QueuePool, pre-ping", "SQLAlchemy sync psycopg"
    ),
    Config(
        "sync_raw", "sa", "sync_raw", "raw psycopg connect per request", "SQLAlchemy sync psycopg"
    ),
    Config(
        "apsy_neon",
        "sa",
        "async_neon",
        "neon create_async_engine() (NullPool)",
        "SQLAlchemy async psycopg",
    ),
    Config(
        "apsy_pool", "sa", "async_pool", "neon allow_client_pool=True", "SQLAlchemy async psycopg"
    ),
    Config(
        "apsy_guide",
        "sa",
        "async_guide",
        "by hand: AsyncAdaptedQueuePool, pre-ping",
        "SQLAlchemy async psycopg",
    ),
    Config(
        "apsy_raw", "sa", "async_raw", "raw AsyncConnection per request", "SQLAlchemy async psycopg"
    ),
    Config(
        "apg_neon",
        "sa",
        "asyncpg_neon",
        "neon create_async_engine(driver='asyncpg')",
        "SQLAlchemy asyncpg",
    ),
    Config("apg_pool", "sa", "asyncpg_pool", "neon allow_client_pool=True", "SQLAlchemy asyncpg"),
    Config(
        "apg_guide",
        "sa",
        "asyncpg_guide",
        "by hand: SQLAlchemy PgBouncer recipe (NullPool)",
        "SQLAlchemy asyncpg",
    ),
    Config("apg_raw", "sa", "asyncpg_raw", "raw asyncpg.connect per request", "SQLAlchemy asyncpg"),
)
