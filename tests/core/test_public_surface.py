"""The core's surface is deliberate: users get ``neon_connect.__all__``; adapters and examples
import from the core only names its modules list in ``__all__``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import neon_connect

ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = ("neon_django", "neon_sqlalchemy", "example_projects", "benchmarks")


def _core_imports():
    for folder in CONSUMERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "neon_connect"
                ):
                    for alias in node.names:
                        yield path.relative_to(ROOT), node.module, alias.name


def test_adapters_import_only_listed_names_from_the_core():
    unlisted = [
        (str(path), module, name)
        for path, module, name in _core_imports()
        if name not in getattr(importlib.import_module(module), "__all__", ())
    ]
    assert unlisted == []


def test_every_exported_name_exists_and_private_helpers_stay_out():
    assert all(hasattr(neon_connect, name) for name in neon_connect.__all__)
    assert not [name for name in neon_connect.__all__ if name.startswith("_")]
    assert len(neon_connect.__all__) == len(set(neon_connect.__all__))
