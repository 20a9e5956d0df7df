"""Alembic on the direct endpoint, with a stock ``env.py`` and one added line::

    config = context.config
    neon_sqlalchemy.alembic.configure(config)   # <- the one line

``configure`` points ``sqlalchemy.url`` at the direct endpoint (from the environment via
``neon_connect``), so ``upgrade``, ``downgrade``, ``current``, ``check`` and offline ``--sql``
all use it; online runs also get cold-start retry and an advisory lock that makes a second
concurrent ``alembic upgrade`` wait for the first and then find nothing to do.

``neon-connect alembic-init DIR`` writes a new Alembic directory with that line in place.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from neon_connect import ConfigurationError, MissingURLError, psycopg_params, resolve
from neon_connect._params import connection_options

from .plugin import carry

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["configure", "direct_url", "init"]

_PLACEHOLDER = "driver://user:pass@localhost/dbname"
ENV_LINE = "neon_sqlalchemy.alembic.configure(config)"
_IMPORTS = ("from __future__ import annotations", "import neon_sqlalchemy.alembic")


def direct_url(
    config: Config | None = None,
    *,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    lock: bool = True,
) -> str:
    """The direct endpoint as a ``postgresql+psycopg://`` URL with its connection parameters.

    Source: ``url``, else the environment, else a real ``sqlalchemy.url`` in alembic.ini.
    """
    try:
        endpoints = resolve(url, env=env)
    except MissingURLError:
        ini_url = config.get_main_option("sqlalchemy.url") if config is not None else None
        if not ini_url or ini_url == _PLACEHOLDER:
            raise
        endpoints = resolve(ini_url)
    endpoint = endpoints.session()
    params = {
        k: str(v) for k, v in connection_options(psycopg_params(endpoint)).items() if v is not None
    }
    if lock:
        params.update(carry(endpoint), neon_migration_lock="1")
    return endpoint.url(reveal_password=True, scheme="postgresql+psycopg", params=params)


def configure(
    config: Config,
    *,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    lock: bool = True,
) -> str:
    """Point ``config``'s ``sqlalchemy.url`` at the direct endpoint; returns it (unescaped).

    ``%`` is doubled before ``set_main_option``, whose ConfigParser interpolation would
    otherwise choke on percent-encoded passwords.
    """
    try:
        value = direct_url(config, url=url, env=env, lock=lock)
    except ConfigurationError as exc:
        raise ConfigurationError(f"Alembic: {exc}") from None
    config.set_main_option("sqlalchemy.url", value.replace("%", "%%"))
    return value


def init(
    directory: str | Path, *, ini: str | Path = "alembic.ini", template: str = "generic"
) -> Path:
    """Run ``alembic init`` (``generic`` or ``async``) and add the one line to its ``env.py``."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    target = Path(directory)
    if target.is_dir() and any(target.iterdir()):  # Alembic refuses it with a traceback
        raise ConfigurationError(
            f"{target} already exists and is not empty: give a new directory, or add "
            f"{ENV_LINE} after 'config = context.config' in its env.py."
        )
    try:
        command.init(Config(str(ini)), str(directory), template=template)
    except CommandError as exc:
        message = f"alembic init: {exc}"
    else:
        message = ""
    if message:
        raise ConfigurationError(message)  # outside the except: one line, no traceback
    env_py = Path(directory) / "env.py"
    text = env_py.read_text()
    anchor = "config = context.config\n"
    if anchor not in text:  # pragma: no cover - Alembic's templates all have it
        raise ConfigurationError(
            f"{env_py} has no line {anchor.strip()!r}; add {ENV_LINE} after it."
        )
    text = text.replace(
        anchor,
        anchor
        + "\n# neon-connect: run every Alembic command on the direct (non-pooled) endpoint.\n"
        + ENV_LINE
        + "\n",
        1,
    )
    env_py.write_text(_sorted_imports(text, add=_IMPORTS))
    return env_py


def _sorted_imports(text: str, *, add: tuple[str, ...]) -> str:
    """``text`` with its leading imports (plus ``add``) grouped and sorted as isort/ruff want:
    ``__future__``, the standard library, third party, then ours; same-module imports merged.
    Alembic's own templates split one module's imports and put ``alembic`` after
    ``sqlalchemy``, which ruff's isort rule flags."""
    lines = text.splitlines(keepends=True)
    end = 0
    while end < len(lines) and (
        lines[end].startswith(("import ", "from ")) or not lines[end].strip()
    ):
        end += 1
    straight: set[str] = set()
    names: dict[str, set[str]] = {}
    for line in [*lines[:end], *add]:
        words = line.split()
        if words and words[0] == "import":
            straight.add(words[1])
        elif words:
            names.setdefault(words[1], set()).update(
                n.strip() for n in line.split(" import ")[1].split(",")
            )

    def section(module: str) -> int:
        top = module.partition(".")[0]
        return (
            0
            if top == "__future__"
            else 1
            if top in sys.stdlib_module_names
            else 3
            if top == "neon_sqlalchemy"
            else 2
        )

    groups: list[list[str]] = [[], [], [], []]
    for module in sorted(straight):
        groups[section(module)].append(f"import {module}")
    for module in sorted(names):
        groups[section(module)].append(f"from {module} import {', '.join(sorted(names[module]))}")
    header = "\n\n".join("\n".join(group) for group in groups if group)
    return header + "\n\n" + "".join(lines[end:])
