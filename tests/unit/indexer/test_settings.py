"""`IndexerSettings`: variables, flags over variables, and messages that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from simsearch.cli import build_parser, main
from simsearch.common.errors import ConfigError
from simsearch.embedder.settings import EmbedderSettings
from simsearch.indexer.build import BuildOptions
from simsearch.indexer.commands import settings_of
from simsearch.indexer.settings import DEFAULT_PARTITIONS, IndexerSettings
from simsearch.models import DEFAULT_MODEL


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIMSEARCH_* variable from the developer's shell."""
    import os

    for name in [n for n in os.environ if n.startswith("SIMSEARCH_")]:
        monkeypatch.delenv(name)


def parsed(*argv: str) -> IndexerSettings:
    return settings_of(build_parser().parse_args(["index", *argv]))


def test_variables_configure_a_build_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_IMAGES_ROOT", "s3://b/images")
    monkeypatch.setenv("SIMSEARCH_STORE", "s3://b/index")
    monkeypatch.setenv("SIMSEARCH_PARTITIONS", "8")
    monkeypatch.setenv("SIMSEARCH_EMBEDDER_URL", "http://embedder:8001/")
    monkeypatch.setenv("SIMSEARCH_PROGRESS", "true")
    from_env = parsed("build")
    assert (from_env.images_root, from_env.store, from_env.partitions) == (
        "s3://b/images",
        "s3://b/index",
        8,
    )
    assert from_env.embedder_url == "http://embedder:8001"
    flags = parsed("build", "--partitions", "4", "--store", "/tmp/x", "--no-progress")
    assert (flags.partitions, flags.store, flags.progress) == (4, "/tmp/x", False)
    assert flags.images_root == "s3://b/images"  # an unset flag leaves the variable


def test_one_source_for_the_shared_defaults() -> None:
    settings = parsed("build")
    assert settings.partitions == DEFAULT_PARTITIONS == BuildOptions().partitions == 64
    assert settings.recall_target == BuildOptions().recall_target
    assert settings.embed_chunk == BuildOptions().chunk
    # the indexer cannot import the embedder: the same default model is checked here
    assert EmbedderSettings.model_fields["model"].default == DEFAULT_MODEL


def test_import_h5_model_is_not_the_in_process_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIMSEARCH_MODEL is what `build` embeds with; `import-h5 --model` labels old vectors."""
    monkeypatch.setenv("SIMSEARCH_MODEL", "efficientnet-lite2")
    args = build_parser().parse_args(["index", "import-h5", "f.h5", "--store", "/s"])
    assert args.model is None  # the runner's default: the old service's resnet50
    assert settings_of(args).model == "efficientnet-lite2"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SIMSEARCH_PARTITIONS", "0", "SIMSEARCH_PARTITIONS: Input should be greater than"),
        ("SIMSEARCH_RECALL_TARGET", "1.5", "SIMSEARCH_RECALL_TARGET: Input should be less"),
        ("SIMSEARCH_EMBEDDER_URL", "embedder:8001", "SIMSEARCH_EMBEDDER_URL: Value error"),
        ("SIMSEARCH_EMBED_CHUNK", "many", "SIMSEARCH_EMBED_CHUNK: Input should be a valid int"),
    ],
)
def test_bad_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        parsed("build", "--images", "/i", "--store", "/s")
    assert expected in err.value.reason


def test_a_missing_store_names_the_variable_and_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "gc", "--keep", "1"]) == 2
    err = capsys.readouterr().err
    assert "SIMSEARCH_STORE (or --store) is required" in err
    assert main(["index", "build", "--store", str(tmp_path)]) == 2
    assert "SIMSEARCH_IMAGES_ROOT (or --images) is required" in capsys.readouterr().err
