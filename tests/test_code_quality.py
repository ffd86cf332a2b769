"""ruff and mypy (strict) are clean and the layers are kept (import-linter, the contract in
pyproject.toml): the test command checks them like any other rule."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy", "."], ["lint-imports"]],
    ids=" ".join,
)
def test_the_code_is_clean(command: list[str]) -> None:
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _reads_the_environment(tree: ast.AST) -> list[int]:
    """Lines that touch `os.environ` or `os.getenv` (or import them from os)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in ("environ", "environb", "getenv", "getenvb"):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "getenv") for a in node.names):
                lines.append(node.lineno)
    return lines


def test_the_environment_is_read_in_one_place() -> None:
    """One configuration: the product reads its environment only through `Settings`
    (worker/config.py), once a process; everything else is handed its settings."""
    settings = ROOT / "worker" / "config.py"
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("activities", "workflows", "worker", "starter")
        for path in (ROOT / package).rglob("*.py")
        if path != settings
        for line in _reads_the_environment(ast.parse(path.read_text(), str(path)))
    }
    assert found == set(), sorted(found)
    assert _reads_the_environment(ast.parse("import os\nos.environ.get('X')\n")) == [2]  # it finds one


MODULE_LINES = 400  # a module a reader takes in at one sitting


def test_no_module_is_longer_than_a_reader_takes_in_at_one_sitting() -> None:
    found = {
        f"{path.relative_to(ROOT)}: {lines}"
        for package in ("activities", "workflows", "worker", "starter", "tests", "bench")
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert found == set(), f"split these (at most {MODULE_LINES} lines a module): {sorted(found)}"
