"""The package map of DESIGN.md, read off the source: no import cycles between packages, no forbidden imports."""

from __future__ import annotations

import ast
from pathlib import Path

import vlarl

ROOT = Path(vlarl.__file__).parent
FORBIDDEN = {  # package -> top-level modules or vlarl packages it must not import (DESIGN.md's table)
    "config": {"torch", "ray", "vlarl.envs", "vlarl.policies", "vlarl.algorithms", "vlarl.rollout"},
    "envs": {"vlarl.policies", "vlarl.algorithms", "ray"},
    "policies": {"vlarl.envs", "ray"},
    "algorithms": {"ray", "vlarl.envs", "vlarl.policies"},
    "rollout": {"ray"},
    "utils": {"vlarl.config", "vlarl.envs", "vlarl.policies", "vlarl.algorithms", "vlarl.rollout"},
}


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem  # top-level modules (trainer, cli, ...) stand alone


def imports() -> dict[str, set[str]]:
    """Package -> every module name its files import (absolute names, ``vlarl.x.y`` kept whole)."""
    out: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        names = out.setdefault(package_of(path), set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names if node.module == "vlarl")
    return out


def test_no_forbidden_imports():
    found = imports()
    for package, banned in FORBIDDEN.items():
        bad = {n for n in found[package] for b in banned if n == b or n.startswith(b + ".")}
        assert not bad, f"vlarl.{package} imports {sorted(bad)}"


def test_no_cycles_between_packages():
    found = imports()
    edges = {
        p: {n.split(".")[1] for n in names if n.startswith("vlarl.") and n.split(".")[1] != p}
        for p, names in found.items()
    }

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(p for p in edges if p in reach(p))
    assert not cycles, f"packages on an import cycle: {cycles}"


def test_only_the_policies_package_imports_a_family():
    found = imports()
    users = sorted(p for p, names in found.items() if any(n.startswith("vlarl.policies.openvla") for n in names))
    assert "policies" in users  # the check can see family imports
    assert users == ["policies"], users
