"""The package's shape: data flows one way (image → machine → trace → heap → api → report → cli),
no import cycle, no module imports another's private names (README, "Where things are")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "emulator"

# A module may import only modules of its own package or of a lower rank. The CPU-state helpers
# are a leaf that the cycle model (below the machine) uses too.
RANKS = {
    "emulator": 0, "emulator.errors": 0, "emulator.layout": 0,
    "emulator.toolchain": 1, "emulator.image": 1, "emulator.machine.cpu": 1,
    "emulator.guestmem": 2, "emulator.cycles": 2,
    "emulator.machine": 3,
    "emulator.trace": 4,
    "emulator.heap": 5,
    "emulator.api": 6,
    "emulator.report": 7,
    "emulator.calibrate": 8,
    "emulator.cli": 9,
    "emulator.__main__": 10,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, lazy ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return [(m, names, line) for m, names, line in found if m == "emulator" or m.startswith("emulator.")]


def rank(module: str) -> tuple[str, int]:
    best = max((key for key in RANKS if module == key or module.startswith(key + ".")), key=len)
    return best, RANKS[best]


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for target, names, _ in imports(name, path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in mods and candidate != name:
                    edges[name].add(candidate)
                    break
    return edges


def test_every_module_has_a_rank():
    unranked = [name for name in modules() if not any(name == k or name.startswith(k + ".") for k in RANKS)]
    assert unranked == []


def test_imports_flow_one_way():
    wrong = []
    for name, targets in graph().items():
        home, level = rank(name)
        for target in targets:
            there, target_level = rank(target)
            if there != home and target_level > level:
                wrong.append(f"{name} (rank {level}) imports {target} (rank {target_level})")
    assert wrong == []


def test_no_import_cycle():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == []


def test_no_private_names_imported_across_modules():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        for target, names, line in imports(name, path):
            for imported in names:
                private = imported.startswith("_") and not imported.startswith("__")
                own_extension = f"{target}.{imported}" not in mods and target == name.rpartition(".")[0]
                if private and not own_extension:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported} from {target}")
    assert wrong == []


def test_the_checker_sees_a_cycle_and_a_wrong_way_import(tmp_path, monkeypatch):
    """The tests above could pass by finding nothing: show they find a planted cycle and upward import."""
    fake = tmp_path / "emulator"
    (fake / "machine").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "machine" / "__init__.py").write_text("")
    (fake / "machine" / "board.py").write_text("from emulator.report.run import x\n")
    (fake / "report").mkdir()
    (fake / "report" / "__init__.py").write_text("")
    (fake / "report" / "run.py").write_text("from emulator.machine.board import y\nfrom emulator.machine.board import _z\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PACKAGE", fake)
    with pytest.raises(AssertionError):
        test_no_import_cycle()
    with pytest.raises(AssertionError):
        test_imports_flow_one_way()
    with pytest.raises(AssertionError):
        test_no_private_names_imported_across_modules()
