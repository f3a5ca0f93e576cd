"""Write docs/configuration.md from the settings classes: every setting of every role.

    python scripts/gen_config_docs.py            # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check    # exit 1 if the file is out of date
    make config-docs                             # the same as the first

The page is made only from the classes' metadata (field name → variable, type, default,
constraints, description; the class docstring as the section's introduction), so it
cannot drift from what the services validate at start; `tests/unit/test_config_docs.py`
regenerates it in memory and fails when the committed file differs.

Each role's class is imported by name when the page is made (`ROLES`), nothing at import
time. Settings shared by several roles are found, not listed: every pydantic-settings
base class of a role (e.g. `ServiceSettings`, `KeySettings`) gets a section of its own,
and a field is documented once, in the section of the class that declares it; a role
that redeclares a shared field (its own default port) lists it in its own section.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
ENV_PREFIX = "SIMSEARCH_"
REGENERATE = "make config-docs (python scripts/gen_config_docs.py)"

# role → its settings class, imported only when the page is made
ROLES: tuple[tuple[str, str], ...] = (
    ("router", "simsearch.router.settings:RouterSettings"),
    ("shard", "simsearch.shard.settings:ShardSettings"),
    ("embedder", "simsearch.embedder.settings:EmbedderSettings"),
    ("indexer", "simsearch.indexer.settings:IndexerSettings"),
)

HEADER = f"""# Configuration

<!-- Generated from the settings classes by {REGENERATE}; do not edit by hand. -->

Every role reads its settings from `SIMSEARCH_*` environment variables: the variable is
`SIMSEARCH_` and the setting's name in capitals (`max_k` → `SIMSEARCH_MAX_K`). The values
are validated when the process starts; a bad one stops it with a message that names the
variable, the value and what is allowed (exit code 2 from the `simsearch` command).
Command-line flags (`simsearch serve ROLE --port …`, `simsearch index build --partitions …`)
override the variable of the same setting.

Settings shared by several roles are listed once, in the section of the class that
declares them; a role's own section lists what only it reads and the shared settings it
gives another default. "unset" means the setting is optional and off until given.
"""


def load_class(ref: str) -> type[Any]:
    """`module:Class`, imported now."""
    module, _, name = ref.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


def declaring_class(cls: type[Any], field: str) -> type[Any]:
    """The class in `cls`'s MRO that declares `field` last (the one whose value counts)."""
    for klass in cls.__mro__:
        if field in vars(klass).get("__annotations__", {}):
            return klass
    return cls


def shared_bases(roles: list[type[Any]]) -> list[type[Any]]:
    """The settings base classes the roles inherit fields from, most general first."""
    found: list[type[Any]] = []
    for cls in roles:
        for klass in reversed(cls.__mro__[1:]):
            own = vars(klass).get("__annotations__", {})
            fields = getattr(klass, "model_fields", {})
            if klass not in found and klass not in roles and set(own) & set(fields):
                found.append(klass)
    return found


def type_text(annotation: Any) -> str:
    """A field's type as a reader would write it (`int`, `path | unset`, `one of: a, b`)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [type_text(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " or ".join(parts) + (" (optional)" if optional else "")
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return "one of: " + ", ".join(f"`{member.value}`" for member in annotation)
    names = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
    name = getattr(annotation, "__name__", str(annotation))
    return {"Path": "path", "SecretStr": "secret string"}.get(name, names.get(name, name))


def default_text(field: Any) -> str:
    """The default as it would be written in the variable (`unset` for None)."""
    if field.default_factory is not None:
        return "(computed)"
    if field.is_required():
        return "**required**"
    value = field.default
    if value is None and type(None) not in typing.get_args(field.annotation):
        return "**required**"  # a None default its type refuses: a validator demands it
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    return '`""`' if value == "" else f"`{value}`"


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("multiple_of", "multiple of"))
_LENGTHS = (("min_length", "length ≥"), ("max_length", "length ≤"))


def constraints_text(field: Any) -> str:
    """The field's numeric and length bounds (annotated-types metadata), e.g. `≥ 1, ≤ 100`."""
    found = []
    for item in field.metadata:
        for attribute, sign in (*_BOUNDS, *_LENGTHS):
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def description(cls: type[Any], name: str) -> str:
    """The field's description; a redeclared shared field (another default) keeps the
    shared one's when it gives none."""
    for klass in cls.__mro__:
        field = getattr(klass, "model_fields", {}).get(name)
        if field is not None and field.description:
            return str(field.description)
    return ""


def cell(text: str) -> str:
    """Table-safe text: one line, no column breaks, `<name>` shown (not taken for HTML)."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text.replace("<", "&lt;")


def section(title: str, cls: type[Any], names: list[str]) -> list[str]:
    """One heading, the class's introduction and a table of its settings."""
    doc = inspect.getdoc(cls) or ""
    intro = " ".join(doc.split("\n\n")[0].split())
    lines = [f"## {title}", "", f"`{cls.__module__}.{cls.__name__}`: {intro}", ""]
    lines += ["| Variable | Type | Default | Constraints | Description |", "|---|---|---|---|---|"]
    for name in names:
        field = cls.model_fields[name]
        row = (
            f"`{ENV_PREFIX}{name.upper()}`",
            type_text(field.annotation),
            default_text(field),
            constraints_text(field),
            description(cls, name),
        )
        lines.append("| " + " | ".join(cell(text) for text in row) + " |")
    return [*lines, ""]


def render(roles: tuple[tuple[str, str], ...] = ROLES) -> str:
    """The whole page, as `docs/configuration.md` should hold it."""
    classes = [load_class(ref) for _, ref in roles]
    parts = [HEADER]
    for base in shared_bases(classes):
        users = [role for (role, _), cls in zip(roles, classes, strict=True) if base in cls.__mro__]
        names = [n for n in base.model_fields if declaring_class(base, n) is base]
        parts.append("\n".join(section(f"Shared: {', '.join(users)}", base, names)))
    for (role, _), cls in zip(roles, classes, strict=True):
        names = [n for n in cls.model_fields if declaring_class(cls, n) is cls]
        parts.append("\n".join(section(role.capitalize(), cls, names)))
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with --check say whether the committed one is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "services"))  # this checkout's classes, not an installed copy
    sys.exit(main())
