"""``python -m neon_connect``: the ``neon-connect`` CLI without relying on the console script."""

from __future__ import annotations

import sys

from neon_connect.cli import main

if __name__ == "__main__":
    sys.exit(main())
