"""Every code snippet in the README is exercised: run here, or found in an example we test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"<!-- snippet: (\S+) -->\n```python\n(.*?)```", README, re.S)


def test_the_readmes_contributing_section_gives_the_two_commands():
    contributing = README.split("## Contributing", 1)[1]
    first_block = contributing.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make demo",
        "make test",
    ]


def test_every_python_block_is_covered():
    assert len(SNIPPETS) == README.count("```python") >= 4


@pytest.mark.parametrize(
    ("where", "code"), [s for s in SNIPPETS if s[0] != "exec"], ids=lambda v: str(v)[:40]
)
def test_snippet_lines_stand_in_a_tested_example(where, code):
    lines = [line.strip() for line in code.splitlines() if line.strip() and line.strip() != "..."]
    source = [line.strip() for line in (ROOT / where).read_text().splitlines()]
    position = 0
    for line in lines:
        assert line in source[position:], f"{line!r} is not in {where} (in this order)"
        position = source.index(line, position) + 1


@pytest.mark.integration
@pytest.mark.parametrize("code", [code for where, code in SNIPPETS if where == "exec"])
def test_snippet_runs(code, neon_local, monkeypatch, capsys):
    for key, value in neon_local.env().items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert capsys.readouterr().out.strip() == "1"
    for name in ("engine", "migrations"):
        namespace[name].dispose()  # type: ignore[attr-defined]


def test_links_are_absolute_so_they_work_on_pypi():
    """PyPI shows this file without the repository around it."""
    relative = [
        link
        for link in re.findall(r"\]\(([^)]+)\)", README)
        if not link.startswith(("https://", "#"))
    ]
    assert relative == []


def test_links_into_the_repository_name_files_that_exist():
    base = "https://github.com/neon-connect/neon-connect/blob/main/"
    for path in re.findall(re.escape(base) + r"([^)#\s]+)", README):
        assert (ROOT / path).exists(), path
