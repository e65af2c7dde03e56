"""The package graph of docs/architecture.md, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """No package imports a layer above it, and no two modules of a package import each other."""
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


UNTYPED = re.compile(r"\b[dD]ict\[\s*str\s*,\s*(?:typing\.)?Any\s*\]|\bJsonObject\b")
TYPED = ("agent", "fleet/campaign")  # the packages whose modules exchange typed models only


def edge_modules() -> set[str]:
    """The modules docs/architecture.md names under "Where untyped JSON is allowed"."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Where untyped JSON is allowed", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `([\w/]+\.py)`", section, flags=re.MULTILINE))


def test_untyped_json_stays_at_the_named_edge() -> None:
    """Outside the documented JSON edge, agent/ and fleet/campaign/ use no dict[str, Any] nor JsonObject."""
    edges = edge_modules()
    found = [
        f"{path.relative_to(ROOT).as_posix()}:{number}: {line.strip()}"
        for package in TYPED
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in edges
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNTYPED.search(line)
    ]
    assert found == []


def test_the_named_edge_modules_exist() -> None:
    """Every module the architecture names as a JSON edge is a module of agent/ or fleet/campaign/."""
    edges = edge_modules()
    assert edges
    assert sorted(e for e in edges if not (ROOT / e).is_file()) == []
    assert sorted(e for e in edges if not e.startswith(tuple(f"{p}/" for p in TYPED))) == []


def test_json_object_is_defined_once_in_common() -> None:
    """The untyped-JSON alias has one definition, in common/jsonedge.py."""
    defined = [
        path.relative_to(ROOT).as_posix()
        for package in ("common", "releases", "agent", "fleet", "simulator")
        for path in sorted((ROOT / package).rglob("*.py"))
        if re.search(r"^JsonObject\b.*=", path.read_text(), flags=re.MULTILINE)
    ]
    assert defined == ["common/jsonedge.py"]
