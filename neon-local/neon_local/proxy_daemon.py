"""The stand-in's Neon-like proxy as a daemon of its own, which ``neon-local up`` starts
(``python -m neon_local.proxy_daemon <state folder>``) and ``down`` stops: one
:class:`~neon_local.neon_proxy.NeonProxy` front per endpoint, on the ports the saved state
names, until SIGTERM or SIGINT. It outlives ``up``, as PgBouncer and PostgreSQL do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from .configs import OWNER
from .neon_proxy import NeonProxy
from .processes import raise_fd_limit
from .standin import LocalNeon

PID_FILE = "proxy.pid"
LOG_FILE = "proxy.log"
"""Each connection's negotiation and login; the daemon's own errors go to ``proxy.err``."""
MODULE = __name__
"""What the daemon's command line runs: how ``standin.py`` tells it from another process."""


def serve(directory: str | Path) -> None:
    """Bind both fronts, detach, and relay until SIGTERM or SIGINT."""
    state = LocalNeon(directory).state()
    if state is None or not state.proxied:
        raise SystemExit(f"neon-local proxy: no stand-in with a proxy in {directory}")
    log = logging.getLogger("neon_local.proxy")
    log.propagate = False
    log.setLevel(logging.INFO)
    # a line per connection: kept to two files of 1 MB, as a stand-in may run for days
    log.addHandler(RotatingFileHandler(Path(directory, LOG_FILE), maxBytes=2**20, backupCount=1))
    routes = {state.proxy_pooled_port: state.pooler_port, state.proxy_direct_port: state.pg_port}
    fronts = [  # bound here, before the fork: a port taken fails the caller's `up` at once
        NeonProxy(
            port=port,
            upstream_port=upstream_port,
            runtime_dir=state.runtime_dir,
            passwords={OWNER: state.password},
            log=log,
        )
        for port, upstream_port in routes.items()
    ]
    daemon = os.fork()
    if daemon:  # like `pgbouncer -d`: the caller waits for this parent, which names the daemon
        Path(directory, PID_FILE).write_text(f"{daemon}\n")
        os._exit(0)
    os.setsid()
    raise_fd_limit()  # two descriptors per client, as PgBouncer's own limit allows
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # the relay threads inherit the mask
    with contextlib.ExitStack() as stack:
        for front in fronts:
            stack.enter_context(front)
        signal.sigwait(stop)


if __name__ == "__main__":
    serve(sys.argv[1])
