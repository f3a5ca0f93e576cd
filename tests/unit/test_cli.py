"""The CLI: flags per role, and no role's code imported before its command runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simsearch.cli import build_parser, runner
from tests.support.paths import ROOT, SERVICES


@pytest.mark.parametrize("role", ["router", "shard"])
@pytest.mark.parametrize("flag", ["--model", "--device", "--weights"])
def test_serve_rejects_the_embedder_flags_for_other_roles(role: str, flag: str) -> None:
    """`serve router --model x` used to be accepted and ignored: the router embeds nothing."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", role, flag, "x"])
    assert exit_.value.code == 2


def test_serve_embedder_takes_its_flags() -> None:
    args = build_parser().parse_args(
        ["serve", "embedder", "--model", "efficientnet-lite2", "--device", "cpu", "--port", "9"]
    )
    assert (args.role, args.model, args.device, args.port) == (
        "embedder",
        "efficientnet-lite2",
        "cpu",
        9,
    )
    assert runner(args).__name__ == "serve_embedder"


def test_every_command_names_a_runner_that_exists() -> None:
    """Each `handler` resolves (its module imported here, where every extra is installed)."""
    cases = [
        ["serve", "router"],
        ["models"],
        ["index", "build"],
        ["index", "import-h5", "f.h5"],
        ["index", "gc", "--keep", "1"],
        ["index", "rollback"],
        ["store", "make-bucket", "s3://b"],
        ["up"],
        ["scale", "2"],
        ["status"],
        ["down"],
        ["supervise"],
        ["search", "x.jpg"],
    ]
    for argv in cases:
        assert callable(runner(build_parser().parse_args(argv))), argv


def test_building_the_parser_imports_no_role_code() -> None:
    """What `simsearch serve router` loads before it runs: the parser modules only."""
    code = (
        "import sys\n"
        "import simsearch.cli\n"
        "simsearch.cli.build_parser().parse_args(['serve', 'router'])\n"
        "roles = ('router', 'shard', 'embedder', 'models')\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('faiss', 'h5py', 'torch')\n"
        "          or m.split('.')[1:2] in [[r] for r in roles]\n"
        "          or m in ('simsearch.indexer.commands', 'simsearch.local.commands')]\n"
        "print(sorted(loaded))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SERVICES), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_version_prints_the_package_version_without_a_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import simsearch

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"simsearch {simsearch.__version__}"
