"""The router's module cut (issue #13), checked on the source so it cannot drift back.

The public bodies live in `common/api.py` (shared with the client): pydantic models only,
importing nothing but pydantic and typing. The router's modules import each other without
a loop, lazy imports counted (`router/kube.py` and the old `router/discovery.py` were
one); routes stay thin files.
Parsed with `ast`: nothing is imported, so the Kubernetes client is not needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import PACKAGE
from tests.unit.test_imports import module_name, targets

ROUTER = PACKAGE / "router"


def _imports(path: Path) -> set[str]:
    """The `simsearch.router.*` modules `path` imports, at any depth of the file."""
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bases = targets(node, module, path.name == "__init__.py")
            found.update(bases)
            if isinstance(node, ast.ImportFrom):  # `from simsearch.router import status`
                found.update(f"{base}.{alias.name}" for base in bases for alias in node.names)
    return {name for name in found if name.startswith("simsearch.router.")}


def _graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROUTER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {t for t in _imports(path) if t in modules}  # modules, not names
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as a path (a, b, ..., a), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_router_modules_import_each_other_without_a_loop() -> None:
    graph = _graph()
    assert "simsearch.router.source" in graph["simsearch.router.kube"]
    assert "simsearch.router.api.routes.admin" in graph["simsearch.router.app"]
    assert "simsearch.router.status" in graph["simsearch.router.app"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_loop_finder_finds_a_loop() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# what the public bodies may import of simsearch: the filter models and the field types,
# which are themselves models and pure checks over the standard library and pydantic
_API_IMPORTS = {"simsearch.common.filters", "simsearch.common.metadata"}
_FILTER_IMPORTS = {"simsearch.common.errors", "simsearch.common.metadata"}


def test_the_filter_models_import_only_errors_and_field_types() -> None:
    for module in ("filters", "metadata"):
        found = {n for n in _imports(PACKAGE / "common" / f"{module}.py") if "simsearch" in n}
        assert found <= _FILTER_IMPORTS, f"common/{module}.py imports {found - _FILTER_IMPORTS}"


def test_the_public_bodies_are_models_only_and_import_no_simsearch_module() -> None:
    """`common/api.py` is the contract the router and the client share: no logic (that is
    `router/query.py`), and nothing of simsearch but the filter models, so the client gets no
    service code."""
    path = PACKAGE / "common" / "api.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in targets(node, module_name(path), False)
    } - _API_IMPORTS
    assert {name.split(".")[0] for name in imported} <= {"__future__", "typing", "pydantic"}
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions == [], f"logic belongs in router/query.py: {functions}"
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            models = {"BaseModel", "_Answer", "SearchResponse", "CollectionSummary"}
            assert bases & models, node.name


def test_routes_are_thin() -> None:
    """Each route function fits on a screen; the rules live in the service and beside it."""
    for path in (ROUTER / "api" / "routes").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef) and node.decorator_list:
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 25, f"{path.name}: {node.name} is {length} lines"
