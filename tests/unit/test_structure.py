"""Size limits on the source, so that a module stays one concept and a function one step.

No module under `services/` over 450 lines, no function (or method) over 60 lines, counted
from its `def` (decorators excluded) to its last line, docstring included. The numbers are
the architecture step's (docs/architecture.md, "Rules the code keeps"): past them a module
was always two concepts and a function several steps with no names. Parsed with `ast`,
nothing imported. The second half checks the checker on small made-up sources, so the
rule cannot pass by counting nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import SERVICES

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function in `source` longer than `limit` lines."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = getattr(child, "name", "")
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > limit:
                    found.append((f"{prefix}{name}", lines))
            visit(child, f"{prefix}{name}." if name else prefix)

    visit(ast.parse(source), "")
    return found


def modules() -> list[Path]:
    return sorted(SERVICES.rglob("*.py"))


def test_the_tree_has_modules() -> None:
    assert len(modules()) > 50


def test_no_module_over_the_line_limit() -> None:
    over = {
        str(path.relative_to(SERVICES)): n
        for path in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {over}"


def test_no_function_over_the_line_limit() -> None:
    over = [
        f"{path.relative_to(SERVICES)}:{name} ({n} lines)"
        for path in modules()
        for name, n in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (name their steps): {over}"


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}() -> None:\n{body}"


@pytest.mark.parametrize(("body_lines", "flagged"), [(59, False), (60, True)])
def test_the_limit_is_counted_from_def_to_the_last_line(body_lines: int, flagged: bool) -> None:
    found = long_functions(_function("f", body_lines))
    assert bool(found) is flagged
    if flagged:
        assert found == [("f", body_lines + 1)]


def test_methods_and_nested_functions_are_counted_with_their_owner() -> None:
    method = "class A:\n" + _function("m", 70, "    ")
    nested = _function("outer", 2) + _function("inner", 65, "    ")
    names = {name for name, _ in long_functions(method + "\n" + nested)}
    assert names == {"A.m", "outer", "outer.inner"}
