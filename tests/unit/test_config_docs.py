"""docs/configuration.md is generated from the settings classes and kept in sync here.

The page is regenerated in memory (`scripts/gen_config_docs.py`) and compared with the
committed file, so a new or changed setting that is not in the docs fails the suite with
the command that fixes it. The renderer is checked on a small class of its own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest
from pydantic import Field

from simsearch.common.settings import ServiceSettings
from tests.support.paths import SCRIPTS


def generator() -> ModuleType:
    """The script as a module (scripts/ is not a package)."""
    path = SCRIPTS / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_is_current() -> None:
    gen = generator()
    committed = gen.OUTPUT.read_text(encoding="utf-8") if gen.OUTPUT.exists() else ""
    assert committed == gen.render(), (
        f"docs/configuration.md is out of date with the settings classes: run {gen.REGENERATE}"
    )


def test_every_setting_of_every_role_is_on_the_page() -> None:
    gen = generator()
    page = gen.render()
    for _, ref in gen.ROLES:
        cls = gen.load_class(ref)
        missing = [n for n in cls.model_fields if f"`SIMSEARCH_{n.upper()}`" not in page]
        assert not missing, f"{ref}: {missing} not documented"
    assert "## Indexer" in page and "## Shared: router, shard, embedder, indexer" in page


class _Base(ServiceSettings):
    """A shared base for the renderer test."""

    colour: Literal["red", "blue"] = Field("red", description="A | pipe and <name>.")


class _Role(_Base):
    """A role for the renderer test.

    Only the first paragraph is the introduction.
    """

    port: int = Field(9000, ge=1, le=65535)
    limit: float | None = Field(None, gt=0, description="Off when unset.")
    needed: str = Field(None, validate_default=False)  # type: ignore[assignment]


@pytest.fixture
def page() -> str:
    return str(generator().render((("thing", f"{__name__}:_Role"),)))


def sections(page: str) -> dict[str, str]:
    """Each section's text by the class it documents (`module.Class`)."""
    found = {}
    for part in page.split("\n## ")[1:]:
        name = part.split("`")[1]
        found[name.rsplit(".", 1)[1]] = part
    return found


def test_fields_land_in_the_class_that_declares_them(page: str) -> None:
    by_class = sections(page)
    assert list(by_class) == ["ServiceSettings", "_Base", "_Role"]  # most general first
    assert by_class["_Base"].startswith("Shared: thing")
    assert "`SIMSEARCH_COLOUR` | one of: `red`, `blue` | `red`" in by_class["_Base"]
    assert "`SIMSEARCH_HOST`" in by_class["ServiceSettings"]
    own = by_class["_Role"]
    assert "`SIMSEARCH_COLOUR`" not in own and "`SIMSEARCH_HOST`" not in own
    # a redeclared shared field: its own default, the shared description
    assert "| `SIMSEARCH_PORT` | integer | `9000` | ≥ 1, ≤ 65535 | TCP port to listen on. |" in own
    assert "Only the first paragraph" not in page


def test_types_defaults_constraints_and_escaping(page: str) -> None:
    assert "| `SIMSEARCH_LIMIT` | number (optional) | unset | > 0 | Off when unset. |" in page
    assert "| `SIMSEARCH_NEEDED` | string | **required** |" in page
    assert "A \\| pipe and &lt;name>." in page


def test_check_mode_names_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = generator()
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    assert gen.main(["--check", "--out", str(stale)]) == 1
    assert "make config-docs" in capsys.readouterr().err
    assert gen.main(["--out", str(stale)]) == 0
    assert gen.main(["--check", "--out", str(stale)]) == 0
