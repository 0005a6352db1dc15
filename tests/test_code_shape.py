"""The package's shape: no import cycles, modules small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "egresslens"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every egresslens module this one imports, at any depth in the file (lazy imports count:
    a cycle through a function-level import is still a cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {name: _imports(path, name, known) for name, path in mods.items()}
    # importing `a.b.c` runs `a/__init__` and `a/b/__init__` too, but a package importing its own
    # submodules is how packages re-export: only edges between modules count, not into parents
    return {n: {t for t in deps if not n.startswith(t + ".")} for n, deps in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle to report."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_itself_back_through_others():
    assert _cycles(_graph()) == []


def test_the_import_graph_sees_lazy_and_relative_imports():
    graph = _graph()
    # the CLI imports its commands lazily, inside functions
    assert "egresslens.ingest" in graph["egresslens.cli"]
    assert "egresslens.recommend.existing" in graph["egresslens.recommend.engine"]


def test_every_module_is_short_enough_to_read_in_one_sitting():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"


# The data's path: sources -> ingest -> normalise/canonical -> store. A reader only reads: it never
# writes the store, quarantines or saves progress (egresslens/ingest.py does, for every source).
DOWNSTREAM = {"egresslens.ingest", "egresslens.store", "egresslens.load", "egresslens.stage",
              "egresslens.normalise", "egresslens.canonical"}


def test_no_source_imports_the_ingest_loop_the_normaliser_or_the_store():
    graph = _graph()
    sources = {name: deps for name, deps in graph.items() if name.startswith("egresslens.sources")}
    assert len(sources) > 8
    assert {name: sorted(deps & DOWNSTREAM) for name, deps in sources.items() if deps & DOWNSTREAM} == {}


def test_the_store_is_written_by_the_ingest_loop_alone():
    """Only the loop's writer (egresslens/load.py) writes the quarantine and the runs' and units' progress."""
    writes = {}
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        hits = [t for t in ("INTO quarantine", "INTO ingest_sources", "INTO storage_blobs", "INTO ingest_runs",
                            "UPDATE ingest_runs", "UPDATE quarantine") if t in text]
        if hits:
            writes[name] = hits
    assert set(writes) == {"egresslens.load"}, writes
