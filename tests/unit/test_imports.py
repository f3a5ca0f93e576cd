"""The package rule, checked on the source: no service package imports another.

`simsearch/__init__.py` states it: the service packages import the shared ones
(`common`, `models`) and never each other, and the shared packages import no service, so
each image carries only its own service's code and dependencies (no torch in the router,
no Kubernetes watch code that only one side can find). Only `cli.py` wires services
together. The client (`client`) is a library: checked like a service, and stricter — it
imports only `common` (and, of third-party code, httpx and pydantic), so it installs
without torch or FAISS; services may use it (the CLI's `search`, the load generator), the
shared packages may not. Every module is parsed with `ast` (nothing is imported, so torch and the
Kubernetes client are not needed); imports inside functions and under `TYPE_CHECKING`
count like any other: a lazy import still ties the packages together.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import PACKAGE

SERVICES = frozenset({"router", "shard", "embedder", "indexer", "local"})
SHARED = frozenset({"common", "models"})
LIBRARIES = frozenset({"client"})
# What a library may import: of simsearch, `common` only; of the rest, these and stdlib.
LIBRARY_SIMSEARCH = frozenset({"common", "__version__"})
LIBRARY_THIRD_PARTY = frozenset({"httpx", "pydantic", "simsearch"})
# Top-level modules that may import any service (the CLI is where roles are wired).
WIRING = frozenset({"cli"})


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """`services/simsearch/router/kube.py` → `simsearch.router.kube`."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    """The top-level package under `simsearch` (`simsearch.router.kube` → `router`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "simsearch" else None


def targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute modules one import statement reads, relative ones resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    here = module.split(".") if is_package else module.split(".")[:-1]
    anchor = here[: len(here) - node.level + 1] if node.level else []
    base = ".".join([*anchor, *([node.module] if node.module else [])])
    if package_of(base) is not None:
        return [base]
    # `from simsearch import router`, `from .. import shard`: the names are the packages
    return [f"{base}.{alias.name}" for alias in node.names]


def forbidden(own: str, other: str | None) -> bool:
    """Whether package `own` may not import package `other` (None: not simsearch)."""
    if other is None or other == own:
        return False
    if own in LIBRARIES:
        return other not in LIBRARY_SIMSEARCH
    if own in SHARED:
        return other in SERVICES | LIBRARIES
    return other in SERVICES


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    """What `path` imports that the package rule forbids, one line per import."""
    module = module_name(path, root)
    own = package_of(module)
    if own is None or own in WIRING:
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):  # every level: lazy and TYPE_CHECKING imports too
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for target in targets(node, module, path.name == "__init__.py"):
            other = package_of(target)
            if forbidden(own, other):
                found.append(f"{module} (line {node.lineno}) imports {target}: {own} may not")
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_is_classified() -> None:
    """A new top-level package must be put in SERVICES or SHARED, not slip past the rule."""
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    known = SERVICES | SHARED | LIBRARIES
    assert packages == known, f"unclassified: {sorted(packages ^ known)}"
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == WIRING


def test_no_service_package_imports_another() -> None:
    assert len(modules()) > 50  # the walk found the package
    found = [line for path in modules() for line in violations(path)]
    assert not found, "service packages import each other:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("from simsearch.shard.kube import Reflector\n", "router/x.py", "simsearch.shard.kube"),
        ("import simsearch.embedder.app\n", "indexer/x.py", "simsearch.embedder.app"),
        ("from simsearch import router\n", "shard/x.py", "simsearch.router"),
        ("from ..shard import topology\n", "router/x.py", "simsearch.shard"),
        ("from ..shard.kube import Reflector\n", "router/sub/x.py", None),  # that is router
        ("from ...shard.kube import Reflector\n", "router/sub/x.py", "simsearch.shard.kube"),
        (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from simsearch.embedder.app import create_app\n",
            "indexer/x.py",
            "simsearch.embedder.app",
        ),
        ("def f():\n    from simsearch.router import kube\n", "common/x.py", "simsearch.router"),
        ("from simsearch.common.kube import Reflector\n", "router/x.py", None),
        ("from simsearch.models.engine import Engine\n", "indexer/x.py", None),
        ("from .discovery import ShardRegistry\n", "router/x.py", None),
        ("from simsearch.client import Client\n", "local/x.py", None),
        ("from simsearch.router.app import create_app\n", "client/x.py", "simsearch.router.app"),
        ("from simsearch.models import DEFAULT_MODEL\n", "client/x.py", "simsearch.models"),
        ("from simsearch.client import Client\n", "common/x.py", "simsearch.client"),
        ("from simsearch.common.api import SearchResponse\n", "client/x.py", None),
    ],
)
def test_the_check_sees_each_kind_of_import(
    tmp_path: Path, source: str, where: str, expected: str | None
) -> None:
    """The checker itself: absolute, relative, lazy and TYPE_CHECKING imports are caught."""
    root = tmp_path / "simsearch"
    path = root / where
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")
    found = violations(path, root)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and f"imports {expected}:" in found[0], found


def test_the_router_and_shard_code_paths_import_no_torch() -> None:
    """The router and shard images have no torch: the CLI with its whole parser, both apps
    and both Kubernetes adapters reach `simsearch.models` only lazily."""
    code = (
        "import sys\n"
        "import simsearch.cli, simsearch.router.app, simsearch.shard.app\n"
        "import simsearch.router.kube, simsearch.shard.kube\n"
        "simsearch.cli.build_parser()\n"
        "heavy = [m for m in sys.modules if m == 'torch' or m.startswith('simsearch.models')]\n"
        "print(sorted(heavy))\n"
    )
    paths = [str(PACKAGE.parent), str(PACKAGE.parents[1])]  # services/, the repository
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def third_party(path: Path) -> set[str]:
    """The top-level modules outside the standard library that `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names)


def test_the_client_imports_only_httpx_pydantic_and_common() -> None:
    paths = sorted((PACKAGE / "client").rglob("*.py"))
    assert len(paths) >= 5
    extra = {str(p.relative_to(PACKAGE)): third_party(p) - LIBRARY_THIRD_PARTY for p in paths}
    assert not any(extra.values()), extra


def test_importing_the_client_loads_no_service_and_no_heavy_module() -> None:
    """What `pip install simsearch` users get from `import simsearch.client`: no torch,
    FAISS, h5py or numpy, and no service package (the router's code stays on the server)."""
    code = (
        "import sys\n"
        "import simsearch.client\n"
        "heavy = {'torch', 'faiss', 'h5py', 'numpy'}\n"
        "roles = ('router', 'shard', 'embedder', 'indexer', 'local', 'models')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy\n"
        "       or (m.startswith('simsearch.') and m.split('.')[1] in roles)]\n"
        "print(sorted(bad))\n"
    )
    paths = [str(PACKAGE.parent), str(PACKAGE.parents[1])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
