"""The package's shape: the layer map of the README ("What is where") holds, with no import cycles (imports inside
functions count)."""
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


# The layers, bottom to top: a module imports only from its own layer or below (README, "What is where").
LAYERS = (
    ("cardiolab.core", "cardiolab.sections", "cardiolab.profiles"),
    ("cardiolab.io",),
    ("cardiolab.data",),
    ("cardiolab.metrics",),                                  # pure: arrays in, numbers out
    ("cardiolab.models", "cardiolab.diffusion"),
    ("cardiolab.engine", "cardiolab.dp"),                    # the one training loop and the DP mechanism
    ("cardiolab.tasks",),
    ("cardiolab.plots",),                                    # figures only: nothing below imports them
    ("cardiolab.evaluation", "cardiolab.privacy", "cardiolab.reporting", "cardiolab.bench"),
    ("cardiolab.cli", "cardiolab.__main__"),
)


def layer_of(module: str) -> int | None:
    """The layer of a module (the longest matching prefix); None for the package itself."""
    hits = [(len(p), i) for i, names in enumerate(LAYERS) for p in names if module == p or module.startswith(p + ".")]
    return max(hits)[1] if hits else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
            if layer_of(m) is not None and layer_of(d) is not None and layer_of(d) > layer_of(m)]


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if m != "cardiolab" and layer_of(m) is None] == []


def test_imports_follow_the_layers():
    assert layer_violations(import_graph()) == []


def test_layer_check_finds_an_upward_import():
    assert layer_violations({"cardiolab.metrics.fidelity": {"cardiolab.plots"}, "cardiolab.plots": set()}) == [
        "cardiolab.metrics.fidelity imports cardiolab.plots"]


def test_layers_in_the_readme():
    """The README's map names every package and top-level module of cardiolab."""
    readme = (PACKAGE.parent / "README.md").read_text()
    where = readme[readme.index("## What is where"):]
    names = [p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
             if not p.name.startswith("__") and (p.suffix == ".py" or (p / "__init__.py").exists())]
    assert [n for n in names if n not in where] == []


def test_cli_help_groups_every_verb_as_the_readme_does():
    """`python -m cardiolab --help` shows every verb once, grouped; the README's CLI table lists them in that order."""
    import re

    from cardiolab.__main__ import GROUPS, VERBS, build_parser

    assert len(VERBS) == len(set(VERBS))
    text = build_parser().format_help()
    for group, verbs in GROUPS.items():
        assert f"{group}:" in text
        for verb in verbs:
            assert re.search(rf"^  {verb} +\S", text, re.M), f"{verb} missing from --help"
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("## The CLI"):readme.index("Every verb has `--help`")]
    assert re.findall(r"^\|[^|]*\| `([a-z-]+)", table, re.M) == list(VERBS)
