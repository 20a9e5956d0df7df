"""Samples what PgBouncer and PostgreSQL see while a configuration runs (connections, peaks)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg

from neon_local import StandInState

__all__ = ["Monitor", "Peaks"]

_BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = 'neondb' AND backend_type = 'client backend'"
)


@dataclass
class Peaks:
    pooler_clients: int = 0  # this configuration's clients at PgBouncer (by application_name)
    pooler_servers: int = 0  # PgBouncer's server connections (all)
    backends: int = 0  # PostgreSQL client backends on neondb (all)
    pooler_clients_left: int = 0  # this configuration's clients still open at the end


class Monitor:
    """Polls PgBouncer's admin console and pg_stat_activity straight (not through the proxies)."""

    def __init__(self, state: StandInState, interval: float = 0.1) -> None:
        # the admin console speaks the simple protocol only: never let psycopg prepare
        self._admin = psycopg.connect(state.admin_url, autocommit=True, prepare_threshold=None)
        self._pg = psycopg.connect(state.superuser_url, autocommit=True)
        version = str(self._show("VERSION")[0].get("version", "?"))
        self.pgbouncer_version = version.removeprefix("PgBouncer ")
        self.interval = interval
        self._label: str | None = None
        self._peaks = Peaks()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _show(self, what: str) -> list[dict[str, Any]]:
        with self._admin.cursor() as cur:
            cur.execute(f"SHOW {what}")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def sample(self, label: str | None) -> Peaks:
        clients = Counter(str(row.get("application_name")) for row in self._show("CLIENTS"))
        servers = len(self._show("SERVERS"))
        backends = int(self._pg.execute(_BACKENDS).fetchone()[0])  # type: ignore[index]
        now = clients[label] if label else 0
        return Peaks(now, servers, backends, now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                label = self._label
                if label is None:
                    continue
                seen = self.sample(label)
                peaks = self._peaks
                peaks.pooler_clients = max(peaks.pooler_clients, seen.pooler_clients)
                peaks.pooler_servers = max(peaks.pooler_servers, seen.pooler_servers)
                peaks.backends = max(peaks.backends, seen.backends)

    def begin(self, label: str) -> None:
        with self._lock:
            self._label = label
            self._peaks = self.sample(label)

    def end(self, settle: float = 0.25) -> Peaks:
        """Peaks of the phase, and the clients still open ``settle`` seconds after its end."""
        time.sleep(settle)  # let the servers finish what they do after the last response
        with self._lock:
            last = self.sample(self._label)
            peaks = self._peaks
            peaks.pooler_clients = max(peaks.pooler_clients, last.pooler_clients)
            peaks.pooler_servers = max(peaks.pooler_servers, last.pooler_servers)
            peaks.backends = max(peaks.backends, last.backends)
            peaks.pooler_clients_left = last.pooler_clients
            self._label = None
            return peaks

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._admin.close()
        self._pg.close()
