"""The surface is what users call: each package's top level, and the few modules users or
frameworks name. Every other module is private (underscore-prefixed), as psycopg keeps its
``_connection_base.py`` behind ``psycopg/__init__.py``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import neon_connect

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("neon_connect", "neon_django", "neon_sqlalchemy")
PUBLIC = {
    # what users import (README, docs/reference/api.md)
    "neon_connect",
    "neon_django",
    "neon_sqlalchemy",
    "neon_sqlalchemy.alembic",  # the one line in Alembic's env.py
    "neon_django.routers",  # named in DATABASE_ROUTERS and MIDDLEWARE
    "neon_connect.errors",  # the exceptions, like psycopg.errors
    # named by a console script, an entry point or ``python -m``
    "neon_connect.cli",  # neon_connect.cli:main
    "neon_connect.__main__",
    "neon_sqlalchemy.plugin",  # the sqlalchemy.plugins entry point
    # loaded by Django by convention
    "neon_django.apps",  # INSTALLED_APPS = ["neon_django"]
    "neon_django.backend",  # ENGINE
    "neon_django.backend.base",  # Django imports ENGINE + ".base"
    "neon_django.management",
    "neon_django.management.commands",
    "neon_django.management.commands.dbshell",
    "neon_django.management.commands.migrate",
    "neon_django.management.commands.neon_check",
}
USER_LIKE = ("example_projects", "benchmarks", "resilience")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_private(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last.startswith("_") and not last.startswith("__")


def _defines_all(path: Path) -> bool:
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for node in ast.parse(path.read_text()).body
    )


def test_every_module_is_listed_public_or_named_private():
    modules = _modules()
    assert [name for name in modules if name not in PUBLIC and not _is_private(name)] == []
    assert sorted(PUBLIC - modules.keys()) == []  # no stale entry


def test_private_modules_define_no_all_and_public_ones_do():
    modules = _modules()
    assert [
        name for name, path in modules.items() if _is_private(name) and _defines_all(path)
    ] == []
    without = [
        name
        for name, path in modules.items()
        if name in PUBLIC
        and not name.endswith("__main__")
        and path.read_text().strip()  # an empty package marker has nothing to list
        and not _defines_all(path)
    ]
    assert without == []


def _imports(folder: str):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{node.__dict__.get('lineno')}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield where, alias.name, None
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    yield where, node.module, alias.name


@pytest.mark.parametrize("folder", USER_LIKE)
def test_user_like_code_imports_only_public_names(folder):
    wrong = []
    for where, module, name in _imports(folder):
        if module.split(".")[0] not in PACKAGES:
            continue
        if module not in PUBLIC:
            wrong.append((where, module))
        elif name is not None:
            listed = getattr(importlib.import_module(module), "__all__", ())
            if name not in listed and f"{module}.{name}" not in PUBLIC:
                wrong.append((where, f"{module}.{name}"))
    assert wrong == []


def _packages() -> list[ModuleType]:
    for name in _modules():  # every module imported, so each submodule is set on its package
        importlib.import_module(name)
    return [
        importlib.import_module(name)
        for name, path in _modules().items()
        if path.name == "__init__.py"
    ]


def test_no_package_attribute_shadows_a_submodule():
    """``from .resolve import resolve`` made ``import neon_connect.resolve`` give the function:
    a public name and a submodule never share a name."""
    shadowed = []
    for package in _packages():
        submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        exported = set(getattr(package, "__all__", ()))
        shadowed += [f"{package.__name__}.{name}" for name in exported & submodules]
        for name in submodules:
            attr = getattr(package, name, None)
            if not isinstance(attr, ModuleType) or attr.__name__ != f"{package.__name__}.{name}":
                shadowed.append(f"{package.__name__}.{name}")
    assert shadowed == []


def test_every_exported_name_exists_and_private_helpers_stay_out():
    assert all(hasattr(neon_connect, name) for name in neon_connect.__all__)
    assert not [name for name in neon_connect.__all__ if name.startswith("_")]
    assert len(neon_connect.__all__) == len(set(neon_connect.__all__))
