"""Every code block of the docs site (``docs/``) is run or checked, as the README's are.

- ``python`` blocks carry a marker on the line above: ``<!-- snippet: PATH -->`` (its lines
  stand, in order, in a file the suite runs), ``<!-- snippet: exec -->`` (run here on the
  stand-in) or ``<!-- snippet: venv -->`` (run in a fresh venv holding the built wheels and
  the framework the page is about: FastAPI, Flask-SQLAlchemy, SQLModel).
- ``bash`` blocks: each command is one we ship or document (``pip install`` of a real
  distribution and extra; ``neon-local``/``neon-connect`` lines parse with our own parsers).
- Links into the repository (``…/blob/main/PATH``) name files that exist, and each
  troubleshooting row links the tests that prove it.

The site itself is built with ``mkdocs build --strict`` by ``make docs`` (part of ``make test``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md"))
REPO = "https://github.com/neon-connect/neon-connect/blob/main/"
BLOCK = re.compile(r"(?:<!-- snippet: (\S+) -->\n)?```(\w*)\n(.*?)```", re.S)


def _blocks(kind: str) -> list[tuple[str, str | None, str]]:
    found = []
    for page in [*PAGES, ROOT / "README.md"]:
        for marker, language, code in BLOCK.findall(page.read_text()):
            if language == kind:
                found.append((str(page.relative_to(ROOT)), marker or None, code))
    return found


PYTHON = _blocks("python")
BASH = _blocks("bash")


def test_the_site_has_the_pages_users_look_for():
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    for page in (
        "index.md", "getting-started/django.md", "getting-started/sqlalchemy.md",
        "getting-started/fastapi.md", "getting-started/flask-sqlalchemy.md",
        "getting-started/sqlmodel.md", "concepts.md", "deploying.md", "workers.md",
        "testing.md", "migrations.md", "replicas.md", "troubleshooting.md", "migrating.md",
        "upgrading.md", "benchmarks.md", "reliability.md", "security.md", "reference/api.md",
    ):  # fmt: skip
        assert page in names, page
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(name in nav for name in names), "every page is in the nav"


def test_every_python_block_is_marked():
    assert len(PYTHON) >= 14
    assert [(page, code[:60]) for page, marker, code in PYTHON if marker is None] == []


@pytest.mark.parametrize(
    ("page", "where", "code"),
    [b for b in PYTHON if b[1] not in (None, "exec", "venv")],
    ids=lambda v: str(v)[:40],
)
def test_snippet_lines_stand_in_a_tested_file(page, where, code):
    lines = [line.strip() for line in code.splitlines() if line.strip() and line.strip() != "..."]
    source = [line.strip() for line in (ROOT / where).read_text().splitlines()]
    position = 0
    for line in lines:
        assert line in source[position:], f"{page}: {line!r} is not in {where} (in this order)"
        position = source.index(line, position) + 1


# -- bash blocks ----------------------------------------------------------------------------

# the extras of pyproject.toml (read without tomllib: Python 3.10 has none)
_EXTRAS_TABLE = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
_OUR_EXTRAS = set(re.findall(r"(?m)^(\w+) = \[", _EXTRAS_TABLE.split("\n[", 1)[0]))

_FRAMEWORKS = {"fastapi", "uvicorn", "flask-sqlalchemy", "sqlmodel"}


_MAKE_TARGETS = set(re.findall(r"(?m)^([\w-]+):", (ROOT / "Makefile").read_text()))


def _commands(code: str) -> list[list[str]]:
    """Each command's words, without ``eval "$(…)"`` and leading ``NAME=value`` words."""
    commands = []
    for line in code.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        eval_inner = re.fullmatch(r'eval "\$\((.*)\)"', line)
        words = shlex.split(eval_inner.group(1) if eval_inner else line)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        commands.append(words)
    return commands


@pytest.mark.parametrize(("page", "marker", "code"), BASH, ids=lambda v: str(v)[:40])
def test_every_shell_command_is_one_we_ship(page, marker, code):
    from neon_connect.cli import build_parser as connect_parser
    from neon_local.cli import build_parser as local_parser

    for words in _commands(code):
        program, args = words[0].rsplit("/", 1)[-1], words[1:]
        if program == "pip":
            assert args[0] == "install", words
            for requirement in args[1:]:
                name, _, extras = requirement.partition("[")
                if name == "neon-connect":
                    assert set(extras.rstrip("]").split(",")) <= _OUR_EXTRAS, requirement
                else:
                    assert name in {"neon-local"} | _FRAMEWORKS, requirement
        elif program == "neon-local":
            local_parser().parse_args(args)
        elif program == "neon-connect":
            connect_parser().parse_args(args)
        elif program == "make":
            assert set(args) <= _MAKE_TARGETS, words
        elif program == "pytest":
            assert all(a.startswith("-") or (ROOT / a.split("::")[0]).exists() for a in args), words
        else:
            pytest.fail(f"{page}: unknown command {words}")


# -- links -----------------------------------------------------------------------------------


def test_links_into_the_repository_name_files_that_exist():
    for page in PAGES:
        for path in re.findall(re.escape(REPO) + r"([^)#\s]+)", page.read_text()):
            assert (ROOT / path).exists(), f"{page.name}: {path}"


def test_every_troubleshooting_entry_points_to_its_tests():
    text = (DOCS / "troubleshooting.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [row for row in rows if not row.startswith("| error you see")]
    assert len(rows) >= 20
    for row in rows:
        assert re.search(re.escape(REPO) + r"tests/", row), row[:80]
    for needed in (
        "prepared statement", "does not exist", "unsupported startup parameter",
        "Endpoint ID is not specified", "query_wait_timeout", "25006", "sslmode",
        "terminating connection", "waiting for", "Couldn't connect to compute node",
    ):  # fmt: skip
        assert needed in text, needed


# -- running the blocks ----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("page", "code"), [(p, c) for p, m, c in PYTHON if m == "exec"], ids=lambda v: str(v)[:40]
)
def test_exec_block_runs_on_the_stand_in(page, code, neon_local, monkeypatch):
    for key, value in neon_local.env().items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, object] = {}
    exec(compile(code, page, "exec"), namespace)
    for value in namespace.values():
        dispose = getattr(value, "dispose", None)
        if callable(dispose) and type(value).__name__ == "Engine":
            dispose()


VENV_PRINTS = {
    "docs/getting-started/fastapi.md": "{'one': 1}",
    "docs/getting-started/flask-sqlalchemy.md": "1",
    "docs/getting-started/sqlmodel.md": "Ada",
}


@pytest.fixture(scope="module")
def framework_venv(tmp_path_factory) -> Path:
    from tests.wheels import build_wheels, fresh_venv

    wheels = build_wheels(tmp_path_factory.mktemp("wheels"))
    return fresh_venv(
        tmp_path_factory.mktemp("frameworks") / "venv",
        f"{wheels['neon_connect']}[sqlalchemy]",
        "fastapi",
        "httpx",
        "flask-sqlalchemy",
        "sqlmodel",
    )


@pytest.mark.integration
@pytest.mark.slow  # a fresh venv with the built wheels and every framework
@pytest.mark.parametrize(
    ("page", "code"), [(p, c) for p, m, c in PYTHON if m == "venv"], ids=lambda v: str(v)[:40]
)
def test_getting_started_page_runs_in_a_fresh_venv(
    page, code, framework_venv, neon_local, tmp_path
):
    from tests.wheels import run

    script = tmp_path / "main.py"
    script.write_text(code)
    ran = run(framework_venv, script, cwd=tmp_path, env=neon_local.env(), timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == VENV_PRINTS[page]
