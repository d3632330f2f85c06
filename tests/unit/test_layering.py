"""DESIGN.md: the cores import no I/O modules (socket, os, asyncio, time, random)."""

from __future__ import annotations

import ast
from pathlib import Path

import v6mostly

FORBIDDEN = {
    "socket",
    "os",
    "asyncio",
    "time",
    "random",
    "subprocess",
    "select",
    "threading",
    "signal",
}
CORE_PACKAGES = ("wire", "addr", "siit", "dhcp4", "ra", "dns")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_core_imports_no_io() -> None:
    root = Path(v6mostly.__file__).parent
    checked = 0
    for pkg in CORE_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            bad = imported_modules(f) & FORBIDDEN
            assert not bad, f"{f.relative_to(root)} imports {sorted(bad)}"
            checked += 1
    assert checked >= 10


def test_core_relative_imports_stay_in_core() -> None:
    """The cores may import each other (siit -> addr -> wire) and errors, nothing above."""
    root = Path(v6mostly.__file__).parent
    allowed = set(CORE_PACKAGES) | {"errors"}
    for pkg in CORE_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(f.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                    assert node.module.split(".")[0] in allowed, f"{f.name} imports ..{node.module}"
