"""DESIGN.md: the cores import no I/O modules (socket, os, asyncio, time, random, a
database): storage is an adapter (``v6mostly.storage``).

The design: docs/architecture.md §1.
"""

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
    "sqlite3",
}
CORE_PACKAGES = ("wire", "addr", "siit", "dhcp4", "ra", "dns", "clat")


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
    assert not imported_modules(root / "buckets.py") & FORBIDDEN
    assert checked >= 10


def test_core_relative_imports_stay_in_core() -> None:
    """The cores may import each other (siit -> addr -> wire) and errors, nothing above."""
    root = Path(v6mostly.__file__).parent
    allowed = set(CORE_PACKAGES) | {"errors", "buckets"}
    for pkg in CORE_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(f.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                    assert node.module.split(".")[0] in allowed, f"{f.name} imports ..{node.module}"


def _runtime_siblings(path: Path) -> set[str]:
    """Modules of the same package that ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            out.add(node.module.split(".")[0])
        else:
            out.update(a.name for a in node.names)
    return out


def test_siit_modules_import_no_cycle() -> None:
    """Issue 8: the header walkers live in one module both directions import, so the
    translation modules form no import circle (imports inside functions count too)."""
    pkg = Path(v6mostly.__file__).parent / "siit"
    graph = {f.stem: _runtime_siblings(f) for f in pkg.glob("*.py")}
    assert "headers" in graph["v6_to_v4"] and "headers" in graph["icmp_errors"]

    def visit(mod: str, stack: list[str]) -> None:
        assert mod not in stack, "import cycle: " + " -> ".join([*stack, mod])
        for dep in sorted(graph.get(mod, ())):
            visit(dep, [*stack, mod])

    for mod in graph:
        visit(mod, [])


#: Which top-level modules of v6mostly each floor may import (at any depth, incl. inside
#: functions). A floor reaches only floors below it (docs/architecture.md §1).
CORES = {"wire", "addr", "siit", "clat", "dhcp4", "ra", "dns", "errors", "buckets"}
FLOORS: dict[str, set[str]] = {
    "buckets": {"buckets"},
    "linux": CORES | {"linux"},
    "storage": CORES | {"storage"},
    "metrics": CORES | {"linux", "services", "config_reader", "metrics", "__version__"},
    "control": CORES | {"control"},
    "logfmt": {"logfmt"},
    "config_reader": CORES | {"config_reader"},
    "config": CORES | {"config_reader", "config", "site_config", "ha"},  # plat may read a site file
    "ha": CORES | {"config_reader", "ha"},  # [ha] and the files it renders for bird2, conntrackd
    "ecmp_config": CORES | {"config_reader", "site_config", "ecmp_config"},
    "site_types": CORES | {"site_types"},
    "site_config": CORES | {"config_reader", "site_types", "site_config"},  # never the plat's
    "services": CORES
    | {"linux", "storage", "metrics", "control", "explain", "config_reader", "config"}
    | {"site_config", "services", "ha", "ecmp_config"},
    "lab": CORES
    | {"linux", "storage", "metrics", "control", "config_reader", "config", "site_config"}
    | {"services", "lab", "ha"},
}


def _own_imports(path: Path, root: Path) -> set[str]:
    """The v6mostly top-level modules ``path`` imports (absolute or relative)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(root).parts
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("v6mostly."):
                out.add(node.module.split(".")[1])
            elif node.level > 0:
                base = list(rel[:-1])[: len(rel) - node.level]
                parts = [*base, *(node.module.split(".") if node.module else [])]
                if parts:
                    out.add(parts[0])
                else:
                    out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("v6mostly."):
                    out.add(a.name.split(".")[1])
    return {m.removesuffix(".py") for m in out}


def test_every_floor_imports_only_floors_below() -> None:
    root = Path(v6mostly.__file__).parent
    checked = 0
    for floor, allowed in FLOORS.items():
        files = (
            sorted((root / floor).rglob("*.py"))
            if (root / floor).is_dir()
            else [root / f"{floor}.py"]
        )
        for f in files:
            bad = _own_imports(f, root) - allowed
            assert not bad, f"{f.relative_to(root)} ({floor}) imports {sorted(bad)}"
            checked += 1
    assert checked >= 40
