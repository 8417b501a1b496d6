"""The house's wings, held against the code: imports go one way and no module imports itself in a circle.

Every import statement counts, at module level or inside a function (a lazy import is still a
dependency). The wings: the runtime (everything in ``baynet/`` but ``cli/``, ``local/`` and ``lab/``), the
local stack (``baynet/local``), the lab (``baynet/lab``); the flows, the tasks, the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("baynet", "flows", "tasks")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The module of ours an imported name lives in (its longest known prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = _target(name)
            if target and target != module:
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def wing(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "baynet":
        return parts[0]                       # flows, tasks
    if len(parts) > 1 and parts[1] in ("cli", "local", "lab"):
        return parts[1]
    return "runtime"


# What each wing may import, besides itself.
ALLOWED = {
    "runtime": set(),
    "local": {"runtime"},
    "lab": {"runtime", "local"},
    "tasks": {"runtime"},
    "flows": {"runtime", "tasks"},
    "cli": {"runtime", "local", "lab", "tasks", "flows"},
}


def test_every_import_goes_the_way_of_the_wings():
    wrong = sorted(f"{m} ({wing(m)}) imports {t} ({wing(t)})" for m, targets in GRAPH.items() for t in targets
                   if wing(t) != wing(m) and wing(t) not in ALLOWED[wing(m)])
    assert not wrong, "imports against the wings:\n" + "\n".join(wrong)


def test_only_the_cli_and_the_flows_import_flows():
    importers = sorted(m for m, targets in GRAPH.items() for t in targets
                       if wing(t) == "flows" and wing(m) not in ("cli", "flows"))
    assert not importers, f"{importers} import the flows; pass the flow in from the CLI instead"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    circles = _cycles(GRAPH)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_checks_see_a_circle_and_a_wrong_way_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert wing("baynet.analysis") == "runtime" and wing("baynet.lab.harness") == "lab"
    assert "lab" not in ALLOWED["runtime"] and "local" not in ALLOWED["runtime"]
    # a lazy import inside a function counts
    assert "baynet.bundles.write" in GRAPH["baynet.lab.datasets.rollouts"]


@pytest.mark.parametrize("package", ["baynet/cli"])
def test_no_cli_module_over_300_lines(package):
    long = {p.name: n for p in (ROOT / package).glob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"split these by command group: {long}"
