"""``python -m neon_connect.cli_main``: the CLI without relying on the console script."""

from __future__ import annotations

import sys

from neon_connect.cli import main

sys.exit(main())
