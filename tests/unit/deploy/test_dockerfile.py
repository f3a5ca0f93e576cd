"""The Dockerfile and .dockerignore, checked without a Docker engine.

A small parser reads the Dockerfile into stages; the tests then check that every COPY
source exists and is sent by .dockerignore, that each role's target runs `simsearch` with
a CMD the real CLI parser accepts for that role, that router and shard images never get
torch, that every target runs as the fixed non-root uid, and that hadolint is clean.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field

import pytest
import yaml

from simsearch.cli import build_parser
from tests.support.paths import ROOT, TOOLS_BIN

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = TOOLS_BIN / "hadolint"

SERVE_ROLES = ("router", "shard", "embedder")
TARGETS = (*SERVE_ROLES, "indexer")
LIGHT_TARGETS = ("router", "shard")
HEAVY_TARGETS = ("embedder", "indexer")
UID = "10001"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# What a deployment appends to the indexer's CMD (its required flags have no env fallback).
INDEXER_ARGS = ("--images", "s3://bucket/photos", "--store", "s3://bucket/index")


# ---- a small Dockerfile parser ------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of the instruction's first line
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined


@dataclass
class Stage:
    name: str | None
    base: str  # the FROM image or the name of an earlier stage
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, instruction) with comments dropped and `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):  # comment lines inside a continuation
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        out.append((start, " ".join(p for p in parts if p)))
        parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return out


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = None
            if len(words) == 3 and words[1].upper() == "AS":
                name = words[2].lower()
            else:
                assert len(words) == 1, f"line {number}: cannot read FROM {args!r}"
            stages.append(Stage(name=name, base=words[0], line=number))
        elif keyword == "ARG" and not stages:
            continue  # ARGs before the first FROM only feed FROM lines
        else:
            assert stages, f"line {number}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(number, keyword, args))
    return stages


def flags(args: str) -> tuple[dict[str, str], list[str]]:
    """Split `--name=value` flags from the remaining words (shell-style quoting)."""
    opts: dict[str, str] = {}
    words = shlex.split(args)
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        opts[name] = value
    return opts, words


def exec_form(instruction: Instruction) -> list[str]:
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"line {instruction.line}: {instruction.keyword} must be a JSON array (exec form), "
        f"got {instruction.args!r}"
    )
    return value


@dataclass(frozen=True)
class Image:
    """What `docker build --target X` produces, as far as these tests care."""

    chain: list[Stage]  # the target's stage first, then its parents
    entrypoint: list[str] | None
    cmd: list[str] | None
    user: str | None


class Dockerfile:
    def __init__(self, text: str) -> None:
        self.stages = parse_dockerfile(text)
        self.by_name = {s.name: s for s in self.stages if s.name is not None}

    def chain(self, target: str) -> list[Stage]:
        """The target's stage and every stage it is built FROM, nearest first."""
        stage = self.by_name[target]
        chain = [stage]
        while stage.base.lower() in self.by_name:
            parent = self.by_name[stage.base.lower()]
            assert parent.line < stage.line, f"{stage.name} is FROM a later stage"
            stage = parent
            chain.append(stage)
        return chain

    def image(self, target: str) -> Image:
        chain = self.chain(target)
        entrypoint: list[str] | None = None
        cmd: list[str] | None = None
        user: str | None = None
        for stage in reversed(chain):  # the base first, as docker applies them
            entrypoints = stage.all("ENTRYPOINT")
            if entrypoints:
                entrypoint = exec_form(entrypoints[-1])
                cmd = None  # a new ENTRYPOINT drops an inherited CMD
            cmds = stage.all("CMD")
            if cmds:
                cmd = exec_form(cmds[-1])
            users = stage.all("USER")
            if users:
                user = users[-1].args
        return Image(chain, entrypoint, cmd, user)


# ---- .dockerignore, with Docker's semantics (last matching pattern wins; a pattern that
# ---- matches a parent folder matches everything under it) --------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def read_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception `!…`, pattern) per line."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def is_sent(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `path` (relative to the context, '/'-separated) reaches the build."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return not excluded


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    assert DOCKERFILE.is_file(), f"no {DOCKERFILE}"
    return Dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    assert DOCKERIGNORE.is_file(), f"no {DOCKERIGNORE}"
    return read_dockerignore(DOCKERIGNORE.read_text())


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


# ---- the helpers themselves ---------------------------------------------------------------


def test_parser_reads_stages_continuations_and_exec_forms() -> None:
    text = (
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\n"
        'FROM ${BASE} AS base\nENTRYPOINT ["tool"]\nCMD ["old"]\n'
        'FROM base AS child\nRUN a \\\n    # a comment\n    && b\nENTRYPOINT ["tool"]\n'
        "FROM child AS leaf\nUSER 10001:10001\n"
    )
    parsed = Dockerfile(text)
    assert [s.name for s in parsed.stages] == ["base", "child", "leaf"]
    assert parsed.stages[1].all("RUN")[0].args == "a && b"
    image = parsed.image("leaf")
    assert [s.name for s in image.chain] == ["leaf", "child", "base"]
    assert image.entrypoint == ["tool"]
    assert image.cmd is None  # reset by the child's ENTRYPOINT
    assert image.user == "10001:10001"


def test_dockerignore_matching_follows_docker() -> None:
    rules = read_dockerignore("*\n!services\n**/__pycache__\n!keep/x.txt\n")
    assert is_sent("services/simsearch/cli.py", rules)
    assert not is_sent("services/simsearch/__pycache__/cli.cpython-311.pyc", rules)
    assert not is_sent(".venv/bin/python", rules)
    assert not is_sent("README.md", rules)
    assert is_sent("keep/x.txt", rules)
    rules = read_dockerignore(".venv\ndocs/bench\n*.md\n!README.md\n")
    assert not is_sent(".venv/bin/python", rules)
    assert not is_sent("docs/bench/x.json", rules)
    assert not is_sent("NOTES.md", rules)
    assert is_sent("docs/shard.md", rules)  # `*` never crosses a `/`
    assert is_sent("README.md", rules)
    assert is_sent("services/x.py", rules)


# ---- the Dockerfile -----------------------------------------------------------------------


def test_role_targets_exist(dockerfile: Dockerfile) -> None:
    missing = [t for t in TARGETS if t not in dockerfile.by_name]
    assert not missing, f"Dockerfile targets missing: {missing}"


def test_stage_references_point_to_earlier_stages(dockerfile: Dockerfile) -> None:
    seen: set[str] = set()
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            refs: list[str] = []
            if instruction.keyword == "COPY":
                opts, _ = flags(instruction.args)
                refs += [opts["from"]] if "from" in opts else []
            elif instruction.keyword == "RUN":
                opts, _ = flags(instruction.args)
                mounts = [v for k, v in opts.items() if k == "mount"]
                for mount in mounts:
                    fields = dict(f.partition("=")[::2] for f in mount.split(","))
                    refs += [fields["from"]] if "from" in fields else []
            for ref in refs:
                assert ref.lower() in seen, (
                    f"line {instruction.line}: --from={ref} is not an earlier stage"
                )
        if stage.name:
            seen.add(stage.name)


def test_copy_sources_exist_and_are_in_the_build_context(
    dockerfile: Dockerfile, ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    checked = 0
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            opts, words = flags(instruction.args)
            if "from" in opts:
                continue  # from another stage or image, not from the context
            assert len(words) >= 2, f"line {instruction.line}: COPY needs sources and a dest"
            for source in words[:-1]:
                where = f"line {instruction.line}: {instruction.keyword} {source}"
                assert not re.match(r"[a-z]+://", source), f"{where}: use files from the repo"
                relative = source.strip("/") or "."
                matches = sorted(ROOT.glob(relative)) if re.search(r"[*?\[]", source) else []
                paths = matches or [ROOT / relative]
                for path in paths:
                    assert path.exists(), f"{where}: {path.relative_to(ROOT)} does not exist"
                    rel = path.relative_to(ROOT).as_posix()
                    assert is_sent(rel, ignore_rules), f"{where}: excluded by .dockerignore"
                    if path.is_dir():
                        modules = [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
                        dropped = [
                            p.relative_to(ROOT).as_posix()
                            for p in modules
                            if not is_sent(p.relative_to(ROOT).as_posix(), ignore_rules)
                        ]
                        assert not dropped, f"{where}: .dockerignore drops {dropped}"
                    checked += 1
    assert checked, "no COPY from the build context at all: where does the code come from?"


def test_dockerignore_keeps_local_state_out(
    ignore_rules: list[tuple[bool, re.Pattern[str]]],
) -> None:
    for path in (
        ".venv/bin/python",
        ".tools/bin/helm",
        ".git/HEAD",
        ".whl/x.whl",
        ".simsearch/state.json",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "docs/bench/x.json",
        "services/simsearch/__pycache__/cli.cpython-311.pyc",
        "services/simsearch.egg-info/PKG-INFO",
    ):
        assert not is_sent(path, ignore_rules), f"{path} would be sent to the Docker build"


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_the_simsearch_command_for_its_role(
    dockerfile: Dockerfile, parser: argparse.ArgumentParser, target: str
) -> None:
    image = dockerfile.image(target)
    assert image.entrypoint == ["simsearch"], f"{target}: ENTRYPOINT {image.entrypoint}"
    assert image.cmd, f"{target}: no CMD"
    argv = list(image.cmd) + (list(INDEXER_ARGS) if target == "indexer" else [])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{target}: `simsearch {' '.join(argv)}` does not parse (exit {exit_.code})")
    if target == "indexer":
        assert (args.command, args.verb) == ("index", "build"), f"{target}: CMD {image.cmd}"
    else:
        assert (args.command, args.role) == ("serve", target), f"{target}: CMD {image.cmd}"


def test_a_wrong_cmd_is_caught(parser: argparse.ArgumentParser) -> None:
    """The check above has teeth: a misspelt role does not parse."""
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "routr"])


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_the_fixed_non_root_user(dockerfile: Dockerfile, target: str) -> None:
    user = dockerfile.image(target).user
    assert user is not None, f"{target}: runs as root (no USER)"
    # numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd
    assert user.split(":")[0] == UID, f"{target}: USER {user}, expected uid {UID}"


@pytest.mark.parametrize("target", LIGHT_TARGETS)
def test_router_and_shard_images_have_no_torch(dockerfile: Dockerfile, target: str) -> None:
    for stage in dockerfile.chain(target):
        for run in stage.all("RUN"):
            where = f"{target}: stage {stage.name}, line {run.line}"
            assert "torch" not in run.args.lower(), f"{where} installs torch"
            extras = re.findall(r"\[([^\]]*)\]", run.args)
            assert not any("embedder" in re.split(r"[,\s]+", group) for group in extras), (
                f"{where} installs the embedder extra"
            )


@pytest.mark.parametrize("target", HEAVY_TARGETS)
def test_embedder_and_indexer_get_cpu_torch_by_default(dockerfile: Dockerfile, target: str) -> None:
    chain = dockerfile.chain(target)
    args = {
        name: value
        for stage in chain
        for arg in stage.all("ARG")
        for name, _, value in [arg.args.partition("=")]
    }
    assert args.get("TORCH_INDEX_URL") == CPU_TORCH_INDEX, f"{target}: ARGs {args}"
    runs = [run.args for stage in chain for run in stage.all("RUN")]
    assert any("${TORCH_INDEX_URL}" in r and "torch==" in r for r in runs), (
        f"{target}: no RUN installs torch from ${{TORCH_INDEX_URL}}"
    )


def test_hadolint_is_clean() -> None:
    if not os.access(HADOLINT, os.X_OK):
        pytest.fail(f"{HADOLINT.relative_to(ROOT)} is missing: run `make tools`")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_images_are_labelled_with_the_charts_release(dockerfile: Dockerfile) -> None:
    """The version an image says (label, `simsearch --version`) is the chart's appVersion."""
    chart = yaml.safe_load((ROOT / "charts" / "simsearch" / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for target in TARGETS:
        chain = dockerfile.chain(target)
        args = dict(arg.args.partition("=")[::2] for stage in chain for arg in stage.all("ARG"))
        assert args.get("SIMSEARCH_VERSION") == chart["appVersion"] == project["version"]
        labels = " ".join(label.args for stage in chain for label in stage.all("LABEL"))
        for key in ("version", "source", "licenses", "title"):
            assert f"org.opencontainers.image.{key}=" in labels, f"{target}: no {key} label"
        assert 'version="${SIMSEARCH_VERSION}"' in labels
        assert f'source="{chart["home"]}"' in labels
        assert f'licenses="{project["license"]}"' in labels
