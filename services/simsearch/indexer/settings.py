"""The indexer's settings (`SIMSEARCH_*`), validated before a build touches anything.

`simsearch index build|import-h5|gc|rollback` load this class; a flag given on the command
line wins over the variable of the same meaning (`load_settings` drops unset flags), as
`simsearch serve` does. The variable names are the ones the other roles use for the same
thing (`SIMSEARCH_STORE`, `SIMSEARCH_INDEX`, `SIMSEARCH_IMAGES_ROOT`,
`SIMSEARCH_EMBEDDER_URL`, `SIMSEARCH_MODEL`, `SIMSEARCH_WEIGHTS`), so one ConfigMap can
configure a router and the indexer that feeds it.

This module is imported by the CLI and the docs generator, so it must stay light: no
faiss, h5py or torch (the indexer's own modules import those).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from simsearch.common.errors import ConfigError
from simsearch.common.settings import ServiceSettings, env_name
from simsearch.models import DEFAULT_MODEL

# One source for each default the indexer's code paths share (`index build`, `import-h5`,
# `write_index`, `BuildOptions`): they import these instead of repeating the numbers.
DEFAULT_PARTITIONS = 64
DEFAULT_RECALL_TARGET = 0.95
DEFAULT_EMBED_CHUNK = 256
DEFAULT_DRIFT_ADVICE_RATIO = 1.25  # calibrated in docs/indexing.md#drift-and---retrain-advice


class IndexerSettings(ServiceSettings):
    """Where the images and the index are, how to embed, and the shape of the index.

    Partitions: 64 is the cluster default (the Helm chart's `indexer.partitions`): enough
    to spread a large collection over many shards and to move one partition at a time
    when the shard count changes. `simsearch up` passes 16 instead (`local/commands.py`):
    a laptop's sample set of a few hundred photos in 64 files per version would make each
    local shard open and search dozens of near-empty partitions per query, for no gain.

    The one-shot switches of a single build (`--full`, `--retrain`, `--allow-empty`) stay
    flags: they say what this run does, not how the indexer is configured.
    The inherited `host`/`port`/`http_*` settings are not used (the indexer serves
    nothing); the `s3_*` ones are.
    """

    images_root: str | None = Field(
        None,
        description="`index build`: the images to index (s3://bucket/prefix, file:///dir or "
        "a path); flag `--images`. The router's variable of the same name is this root.",
    )
    store: str | None = Field(
        None, description="Root URI of the object store that holds the index; flag `--store`."
    )
    index: str = Field("default", min_length=1, description="Index name; flag `--index`.")
    partitions: int = Field(
        DEFAULT_PARTITIONS,
        ge=1,
        le=10_000,
        description="Partitions of a new version; flag `--partitions` (`simsearch up`: 16).",
    )
    embedder_url: str | None = Field(
        None,
        description="Embedder base URL (`POST /embed/keys`); unset: embed in this process "
        "(needs the embedder extra); flag `--embedder`.",
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="In-process embedding model (registry name); flag `--model`. "
        "`import-h5 --model` names what made the old vectors instead (default resnet50).",
    )
    weights: str | None = Field(
        None, description="In-process model weights (file/URI or 'random'); flag `--weights`."
    )
    recall_target: float = Field(
        DEFAULT_RECALL_TARGET,
        gt=0,
        le=1,
        description="The default nprobe is the smallest whose build-time recall@10 reaches "
        "this; flag `--recall-target`.",
    )
    workdir: Path | None = Field(
        None,
        description="Local folder for the resume journal; default "
        "<tmp>/simsearch-build/<index>; flag `--workdir`.",
    )
    embed_chunk: int = Field(
        DEFAULT_EMBED_CHUNK,
        ge=1,
        le=10_000,
        description="Images embedded and journaled per step (one `/embed/keys` call): at "
        "most the embedder's SIMSEARCH_MAX_FILES (256 by default).",
    )
    progress: bool = Field(True, description="Progress bars on stderr; flag `--no-progress`.")
    drift_advice_ratio: float = Field(
        DEFAULT_DRIFT_ADVICE_RATIO,
        gt=1,
        description="`index build`: an incremental build that reuses the template advises "
        "a new one (`--retrain`; `--full` for a PCA version) when the new images' mean "
        "distance to their nearest coarse centroid exceeds this many times the template's "
        "training sample's. Measured on photo-like "
        "vectors (60k, 1280-d, 1,024 lists): new vectors from the same distribution 1.04; "
        "from 1,000 unseen clusters 2.53 (half of them unseen: 1.78); 1.25 is reached when "
        "~15 % of the new vectors come from clusters the template never saw.",
    )
    metadata_sidecar: str | None = Field(
        None,
        description="`index build`: the metadata sidecar (.jsonl or .csv; a path or URI); "
        "unset: `metadata.jsonl`, else `metadata.csv`, at the images root if there is one; "
        "flag `--metadata`.",
    )
    metadata_tags: bool = Field(
        False,
        description="`index build`: read each image's S3 object tags as string metadata "
        "fields (one GetObjectTagging per image); flag `--metadata-tags`.",
    )

    @field_validator("embedder_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = value.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return url

    def required(self, field: str, flag: str) -> str:
        """The value of a setting this command cannot run without, or a ConfigError that
        names both ways to give it (`gc` needs a store, `build` images too)."""
        value = getattr(self, field)
        if value is None or not str(value).strip():
            raise ConfigError(f"{env_name(field)} (or {flag}) is required")
        return str(value)
