"""The package's layers: algorithms import nothing above them, and no two parts import each other.

Every import is read, at module level and inside functions, so a function-local import cannot
hide a tie. A part is a top-level subpackage (`attacks`) or module (`errors`) of deepshield.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deepshield"

# tensors in, tensors/numbers out
ALGORITHMS = {"attacks", "explain", "defenses", "metrics", "models", "data", "disrupt", "proactive"}
# the training loop sits below the run layer too: it may be used by algorithms (DDP sharding)
BELOW_RUNS = ALGORITHMS | {"train"}
# what composes them: run folders, reports and the commands built on them
ABOVE = {"run", "runs", "report", "cli", "audit", "service", "studies", "demo", "scan"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every deepshield module that `path` imports, at any depth of its syntax tree."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "deepshield"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] == "deepshield":
                out.add(module)
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges() -> dict[str, set[str]]:
    """part -> parts it imports (self-imports left out)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        source = _part(_module_name(path))
        for module in _imports(path):
            target = _part(module)
            if target and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def test_algorithms_and_training_import_nothing_above_them():
    crossing = sorted(
        f"{_module_name(p)} imports {m}"
        for p in SRC.rglob("*.py")
        if _part(_module_name(p)) in BELOW_RUNS
        for m in _imports(p)
        if _part(m) in ABOVE
    )
    assert not crossing, "algorithm packages import the layers above them:\n" + "\n".join(crossing)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of parts that reach each other (size >= 2 is a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_cycle_between_parts():
    cycles = [g for g in _strongly_connected(_edges()) if len(g) > 1]
    assert not cycles, f"parts that import each other (directly or around a cycle): {cycles}"


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(g for g in _strongly_connected(graph) if len(g) > 1) == [["a", "b", "c"]]


def test_reader_sees_function_local_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function and a relative one are both found."""
    pkg = tmp_path / "deepshield" / "attacks"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("def f():\n    from deepshield.run import RunDir\n\nfrom ..report import html\n")
    global SRC
    saved, SRC = SRC, tmp_path / "deepshield"
    try:
        assert _imports(f) == {"deepshield.run", "deepshield.report"}
    finally:
        SRC = saved
