"""The router's settings (`SIMSEARCH_*`), validated when the service starts.

Discovery settings are checked together (static needs `SIMSEARCH_SHARDS`, file needs
`SIMSEARCH_SHARDS_FILE`, dns needs `SIMSEARCH_SHARDS_DNS`) so that a router that could
never find a shard refuses to start instead of answering 503 forever.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from simsearch.common.apikeys import KeySettings, parse_key_list
from simsearch.common.limits import MAX_CANDIDATES, MAX_K
from simsearch.router.clientip import TrustedProxies
from simsearch.router.ratelimit import ROUTE_CLASSES, Limit, RouteClass, Target

_MIB = 1024 * 1024
# Multipart framing around an uploaded image (boundaries, part headers): the body limit
# is the upload limit plus this, so a file of exactly max_upload_bytes still fits.
MULTIPART_SLACK_BYTES = 64 * 1024


def _check_http_url(value: str, what: str) -> str:
    """An absolute http(s) URL without a trailing slash (routes are appended to it)."""
    url = value.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ValueError(f"{what} {value!r} must be an http:// or https:// URL")
    return url


def _static_urls(value: str) -> list[str]:
    """Comma-separated URLs, normalised, duplicates dropped, in the order given."""
    urls: list[str] = []
    for item in value.split(","):
        if item.strip():
            url = _check_http_url(item, "entry")
            if url not in urls:
                urls.append(url)
    return urls


class RouterSettings(KeySettings):
    """Where the shards and the embedder are, query limits, and the HTTP client pool."""

    port: int = Field(8000, ge=1, le=65535)
    discovery: Literal["static", "file", "dns", "kubernetes"] = Field(
        "static",
        description="static: SIMSEARCH_SHARDS; file: local mode; dns: headless Service; "
        "kubernetes: the shard Service's EndpointSlices, watched.",
    )
    shards: str = Field(
        "", validate_default=True, description="static discovery: comma-separated shard URLs."
    )
    shards_file: str | None = Field(
        None,
        validate_default=True,
        description='file discovery: JSON {"shards": [urls]} that local mode rewrites.',
    )
    shards_dns: str | None = Field(
        None,
        validate_default=True,
        description="dns discovery: a headless Service name resolved to A records.",
    )
    shards_service: str | None = Field(
        None,
        validate_default=True,
        description="kubernetes discovery: the shard Service whose EndpointSlices list the pods.",
    )
    namespace: str | None = Field(
        None, description="kubernetes discovery: the namespace (default: the pod's own)."
    )
    shard_port: int = Field(
        8002, ge=1, le=65535, description="dns/kubernetes discovery: the shards' port."
    )
    shard_scheme: Literal["http", "https"] = "http"
    index: str = Field("default", description="Index name (for reading its manifest).")
    store: str | None = Field(
        None, description="Index store URI; its manifest's `source` is the images root."
    )
    images_root: str | None = Field(
        None, description="URI the indexed image keys are relative to (overrides the manifest)."
    )
    public_s3_endpoint: str | None = Field(
        None,
        description="When set (and images are on S3), /images/{id} redirects to a URL "
        "presigned for this endpoint instead of streaming the bytes.",
    )
    presign_expires_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    max_image_bytes: int = Field(
        50 * _MIB, ge=1024, description="Largest image /images/{id} reads through the router."
    )
    embedder_url: str | None = Field(None, description="Embedder base URL for /search/image.")
    embed_timeout_s: float = Field(30.0, gt=0, le=600)
    poll_s: float = Field(2.0, gt=0, le=300, description="How often every shard's /info is read.")
    info_timeout_s: float = Field(1.0, gt=0, le=60, description="Timeout of one /info call.")
    timeout_ms: float = Field(2000.0, ge=10, le=600_000, description="Deadline of one query.")
    first_try_share: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Share of the deadline a shard gets before its partitions "
        "are retried on another holder (only when another holder exists).",
    )
    retry: bool = Field(True, description="Retry a failed shard's partitions on other holders.")
    hedge_percentile: float | None = Field(
        None,
        ge=50,
        le=99.9,
        description="Hedge: when a shard has not answered after this percentile of its recent "
        "answer times, ask other holders of its partitions too and take the first complete "
        "answer (off when unset; needs replication).",
    )
    hedge_min_ms: float = Field(
        5.0, ge=0, le=60_000, description="Never hedge earlier than this (ms)."
    )
    max_k: int = Field(MAX_K, ge=1, le=MAX_K)
    default_k: int = Field(10, ge=1, le=1000, validate_default=True)
    max_queries: int = Field(64, ge=1, le=1024, description="Vectors per /search/vector call.")
    coalesce_queries: int = Field(
        32,
        ge=1,
        le=256,
        description=(
            "Concurrent queries sent to the shards in one call (1: never coalesce); see "
            "router/coalesce.py."
        ),
    )
    max_candidates: int = Field(
        MAX_CANDIDATES,
        ge=1,
        description="Largest k·refine a query may ask (the shards' own limit).",
    )
    max_upload_bytes: int = Field(20 * _MIB, ge=1024, description="Largest /search/image file.")
    max_vector_body_bytes: int = Field(
        4 * _MIB,
        ge=1024,
        le=64 * _MIB,
        description="Largest /search/vector body: 64 vectors of 1280-d as JSON are ~2 MB "
        "(~25 B a number); pydantic-core parses ~0.6 GB/s, so 4 MB holds the loop ~7 ms.",
    )
    max_connections: int = Field(256, ge=1, le=100_000, description="HTTP pool size (all hosts).")
    blas_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="Threads numpy's BLAS may use. The router's vector work is one small "
        "query at a time on the event loop: a second BLAS thread only adds a hand-off per "
        "call and takes a core from the shards (measured: ~10 % of QPS at concurrency 8).",
    )
    keepalive_expiry_s: float = Field(
        4.0,
        ge=0,
        le=3600,
        description="Below uvicorn's 5 s keep-alive timeout, so the router "
        "drops an idle connection before the shard does (no reuse of a closed connection).",
    )
    ready_min_coverage: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Coverage needed for /health/ready; 0 (default) = ready while any "
        "partition is served (answers are flagged partial); 1.0 = only when some version is "
        "complete (a shard restart then takes every router out of the Service).",
    )

    # the live recall monitor (router/recall.py, docs/router.md "Live recall")
    recall_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of real queries re-run as an exact search in the background to "
        "measure live recall@k (0: the monitor is off).",
    )
    recall_max_per_s: float = Field(
        2.0,
        gt=0,
        le=10_000,
        description="Most queries sampled per second (a token bucket, burst of one second): "
        "bounds the exact scans the shards run whatever the query rate.",
    )
    recall_queue: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Sampled queries waiting for their exact re-run; when full, new samples "
        "are dropped (counted queue_full).",
    )
    recall_batch: int = Field(
        16,
        ge=1,
        le=256,
        description="Sampled queries sent to the shards in one exact request (those with the "
        "same collection, version, k, vector space and filter).",
    )
    recall_linger_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="How long the monitor waits for a batch to fill after its first sample. "
        "A shard's exact scan costs the same for 1 query as for 16 (it is bound by reading "
        "and converting the features), so at the default cap a batch of 16 every ~8 s costs "
        "1/16 of unbatched scans; 0 sends whatever is waiting at once.",
    )
    recall_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Deadline of one exact re-run (the shards scan every row, at low priority).",
    )
    recall_window_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="Live recall is the mean over the samples of this many last seconds.",
    )
    recall_min_samples: int = Field(
        30,
        ge=1,
        le=1_000_000,
        description="Samples in the window before live recall may be flagged as drift.",
    )
    recall_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Live recall below the build-time probe's by more than this is drift "
        "(simsearch_recall_drift = 1).",
    )

    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated search keys; when any key is configured (this, "
        "SIMSEARCH_ADMIN_KEYS or SIMSEARCH_API_KEYS_FILE), searches and images need one in "
        "the X-API-Key header (health, metrics and the page stay open).",
    )

    rate_limits: bool = Field(
        False,
        description="Turn the rate limits below on (per router replica; the chart turns "
        "them on). Off here so the local demo and the benchmarks are never throttled.",
    )
    rate_vector_search_per_address: str = Field(
        "200/s:400", description="/search/vector and /search/similar, per client address."
    )
    rate_vector_search_per_key: str = Field(
        "1000/s:2000", description="/search/vector and /search/similar, per API key."
    )
    rate_image_search_per_address: str = Field(
        "5/s:20", description="/search/image (each one is embedded), per client address."
    )
    rate_image_search_per_key: str = Field("20/s:40", description="/search/image, per API key.")
    rate_images_per_address: str = Field(
        "100/s:300", description="/images/{id}, per client address (a page of thumbnails)."
    )
    rate_images_per_key: str = Field("300/s:600", description="/images/{id}, per API key.")
    rate_admin_per_address: str = Field("10/m:5", description="/admin/*, per client address.")
    rate_admin_per_key: str = Field("10/m:5", description="/admin/*, per API key.")
    rate_max_tracked: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="Most identities (addresses or keys) tracked per limit before the "
        "oldest are forgotten (bounds memory under a flood of addresses).",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated CIDRs of proxies whose X-Forwarded-For is believed "
        "(e.g. the ingress controller's pods); empty: the peer address is the client.",
    )

    def search_key_text(self) -> str:
        """The search keys (SIMSEARCH_API_KEYS)."""
        return self.api_keys.get_secret_value() if self.api_keys else ""

    @field_validator("api_keys")
    @classmethod
    def _valid_search_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key_list(value.get_secret_value())
        return value

    @field_validator(
        *(f"rate_{c}_per_{t}" for c in ROUTE_CLASSES for t in ("address", "key")),
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        Limit.parse(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        TrustedProxies.parse(value)
        return value

    def rate_limit_table(self) -> dict[tuple[RouteClass, Target], Limit | None]:
        """Every (route class, target) limit; None where it is `off`."""
        targets: tuple[Target, ...] = ("address", "key")
        return {
            (c, t): Limit.parse(str(getattr(self, f"rate_{c}_per_{t}")))
            for c in ROUTE_CLASSES
            for t in targets
        }

    @field_validator("embedder_url", "public_s3_endpoint")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else _check_http_url(value, "URL")

    @field_validator("shards", "shards_file", "shards_dns", "shards_service")
    @classmethod
    def _needed_by_discovery(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The field the chosen discovery reads must be set (errors name this variable)."""
        needs = {
            "static": "shards",
            "file": "shards_file",
            "dns": "shards_dns",
            "kubernetes": "shards_service",
        }
        discovery = info.data.get("discovery")
        if needs.get(str(discovery)) == info.field_name and not (value or "").strip():
            raise ValueError(f"required with SIMSEARCH_DISCOVERY={discovery}")
        if info.field_name == "shards" and value:
            _static_urls(value)  # a malformed URL is a start-up error
        return value

    @field_validator("default_k")
    @classmethod
    def _default_within_max(cls, value: int, info: ValidationInfo) -> int:
        max_k = info.data.get("max_k")
        if max_k is not None and value > max_k:
            raise ValueError(f"must be <= SIMSEARCH_MAX_K ({max_k})")
        return value

    def shard_urls(self) -> list[str]:
        """The static shard URLs, normalised, duplicates dropped, in the order given."""
        return _static_urls(self.shards)

    def max_body_bytes(self) -> int:
        """The request body limit: an image upload and its multipart framing."""
        return self.max_upload_bytes + MULTIPART_SLACK_BYTES
