from __future__ import annotations

import sys

from neon_connect.cli import main

if __name__ == "__main__":
    sys.exit(main(["local", *sys.argv[1:]], prog="python -m neon_connect.local"))
