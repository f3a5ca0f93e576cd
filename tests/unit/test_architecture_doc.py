"""docs/architecture.md names every module of the package, so the map cannot fall behind.

A newcomer reads the map first (the README sends them there); a module that is not on it
is a concept nobody was told about. Each module must appear by its path inside its
package (`routing.py`, `api/routes/search.py`, `storage/s3.py`, …); package `__init__`
files are exempt (their package is named). The doc's other references — test files,
the picture — must exist too.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import PACKAGE, ROOT

DOC = ROOT / "docs" / "architecture.md"


def package_path(module: Path) -> str:
    """`services/simsearch/router/api/routes/search.py` → `api/routes/search.py`;
    a top-level module (`cli.py`) is its own name."""
    parts = module.relative_to(PACKAGE).parts
    return "/".join(parts[1:] if len(parts) > 1 else parts)


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_is_on_the_map() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [str(p.relative_to(PACKAGE)) for p in modules() if package_path(p) not in text]
    assert not missing, f"modules missing from docs/architecture.md: {missing}"


def test_package_paths_are_counted_inside_the_package() -> None:
    assert package_path(PACKAGE / "router" / "api" / "routes" / "search.py") == (
        "api/routes/search.py"
    )
    assert package_path(PACKAGE / "cli.py") == "cli.py"
    assert len(modules()) > 50


def test_what_the_map_points_at_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:tests|scripts)/[\w/]+\.py)`", text))
    paths |= {f"docs/{p}" for p in re.findall(r"\]\(((?:img/)?[\w-]+\.(?:md|png))\)", text)}
    assert paths, "the map names no file at all"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md points at missing files: {missing}"
