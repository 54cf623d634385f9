"""The package's shape: no import cycles (imports inside functions count) and pure metrics."""
from __future__ import annotations

import ast
from pathlib import Path

import cardiolab

PACKAGE = Path(cardiolab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: cardiolab modules it imports anywhere in its body}; `from pkg import mod` resolves to pkg.mod."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_metrics_are_pure():
    """metrics/ imports nothing above models/, data/, io/ and core (no tasks, evaluate, report, cli, engine)."""
    allowed = ("cardiolab.metrics", "cardiolab.models", "cardiolab.data", "cardiolab.io", "cardiolab.core",
               "cardiolab.profiles", "cardiolab")
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("cardiolab.metrics"):
            bad = sorted(d for d in deps if not d.startswith(allowed) or d in ("cardiolab.engine",))
            assert not bad, f"{name} imports {bad}"
