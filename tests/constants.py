"""Values many tests share."""

from __future__ import annotations

SECRET = "npg_S3cr3t-P4ss"
"""A password tests plant in URLs and then look for in every message."""
