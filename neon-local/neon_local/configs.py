"""The stand-in's configuration files: ``postgresql.conf``, ``pg_hba.conf``, ``pgbouncer.ini``.

PgBouncer gets Neon's documented settings (``../shared/reference/neon-and-peers.md``):
transaction mode, ``max_client_conn=10000``, ``query_wait_timeout=120`` and, on PgBouncer
>= 1.22, ``max_prepared_statements=1000``. An older PgBouncer (Debian 12's 1.18) gets the
same file without the settings it does not know. ``default_pool_size`` stays an option (Neon
uses 0.9 x ``max_connections``; tests want a small pool to force server-connection switches).
"""

from __future__ import annotations

from pathlib import Path

from .binaries import NEON_PGBOUNCER, parse_version
from .processes import HOST

DATABASE = "neondb"
"""Neon's default database; the stand-in and its replicas serve it."""
OWNER = "neondb_owner"
"""Neon's default role, owner of ``DATABASE``; the pooled and direct URLs connect as it."""
SUPERUSER = "cloud_admin"
"""The superuser; also the replication role ``PG_HBA`` admits (replica.py)."""

NEON_MAX_PREPARED_STATEMENTS = 1000
NEON_MAX_CLIENT_CONN = 10000
NEON_QUERY_WAIT_TIMEOUT = 120


def max_prepared_statements(pgbouncer_version: str) -> int:
    """Neon's ``max_prepared_statements`` on a PgBouncer that has it; 0 (untracked) before."""
    return NEON_MAX_PREPARED_STATEMENTS if parse_version(pgbouncer_version) >= NEON_PGBOUNCER else 0


def postgresql_conf(*, runtime: Path, port: int, max_connections: int) -> str:
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": "''",
        "max_connections": str(max_connections),
        "ssl": "on",
        "ssl_cert_file": f"'{runtime / 'server.crt'}'",
        "ssl_key_file": f"'{runtime / 'server.key'}'",
        "password_encryption": "'scram-sha-256'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
    }
    return "\n# neon-local stand-in\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())


PG_HBA = (
    "# TLS + SCRAM only, like Neon\n"
    "hostssl all all 127.0.0.1/32 scram-sha-256\n"
    f"hostssl replication {SUPERUSER} 127.0.0.1/32 scram-sha-256\n"  # replicas (replica.py)
    "hostnossl all all 0.0.0.0/0 reject\n"
)


def pgbouncer_ini(
    *,
    runtime: Path,
    pg_port: int,
    listen_port: int,
    owner: str,
    pool_size: int,
    prepared_statements: int,
) -> str:
    settings: dict[str, object] = {
        "listen_addr": HOST,
        "listen_port": listen_port,
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": runtime / "userlist.txt",
        "pool_mode": "transaction",
        "max_client_conn": NEON_MAX_CLIENT_CONN,
        "default_pool_size": pool_size,
        "reserve_pool_size": 0,
        "query_wait_timeout": NEON_QUERY_WAIT_TIMEOUT,
        "admin_users": owner,
        "stats_users": owner,
        "client_tls_sslmode": "require",
        "client_tls_key_file": runtime / "server.key",
        "client_tls_cert_file": runtime / "server.crt",
        "server_tls_sslmode": "require",
        "logfile": runtime / "pgbouncer.log",
        "pidfile": runtime / "pgbouncer.pid",
    }
    if prepared_statements:
        settings["max_prepared_statements"] = prepared_statements
    lines = "".join(f"{k} = {v}\n".replace(" = \n", " =\n") for k, v in settings.items())
    return f"[databases]\n* = host={HOST} port={pg_port}\n[pgbouncer]\n{lines}"
