"""One exception tree for the whole domain, mapped to HTTP status codes only at the edge.

    SimsearchError                     (500 unless a subclass says otherwise)
    ├── BadInput                       (4xx: the caller sent something we refuse)
    │   ├── EmptyInput                 400  empty body / no file
    │   ├── CorruptImage               400  bytes claim an image format but do not decode
    │   ├── InvalidVector              400  wrong dimension, NaN/inf
    │   ├── InvalidParameter           400  k out of range, bad option
    │   ├── MalformedBody              400  the body does not parse as its content type
    │   ├── PayloadTooLarge            413  over the byte limit
    │   ├── ImageTooLarge              413  over the pixel limit (decompression bomb)
    │   └── UnsupportedMediaType       415  not an image format we decode
    ├── NotFound                       404  unknown id or object key
    ├── Unauthorized                   401  an API key is required and missing or wrong
    ├── Forbidden                      403  not allowed: a key's scope, or outside the allowed roots
    ├── RateLimited                    429  over a rate limit; `Retry-After` says when to retry
    ├── NotServed                      409  this shard does not serve it now; another may
    │   ├── VersionNotLoaded           409  the index version is not held here
    │   └── PartitionsNotReady         409  partitions not owned / loading / failed here
    ├── ConfigError                    raised at start-up: a setting is wrong or a resource missing
    │   └── ModelWeightsMissing        the model's weight file cannot be found
    ├── StorageError                   503  the object store failed or is unreachable
    │   └── ObjectNotFound             404  the key does not exist
    ├── CorruptIndex                   503  index files damaged, incomplete or unreadable
    ├── Unavailable                    503  the cluster cannot answer now (no shard, embedder)
    │   └── PartialAnswer              503  strict=true and some partitions did not answer
    ├── TopologyUnknown                503  the shard count cannot be known yet
    ├── NoImagesRoot                   503  the router does not know where images live
    ├── UpstreamError                  502  another service answered with something unusable
    └── Overloaded                     503  a queue is full; retry later (backpressure)

Services raise these; the FastAPI layer turns `status_code` + `reason` into a JSON body
`{"status": "error", "error": <code>, "detail": <reason>}` (plus any `response_headers()`
the error names, e.g. `Retry-After`). Anything that is not a
`SimsearchError` is a bug and becomes a 500 with a request id to look up in the logs.
"""

from __future__ import annotations


class SimsearchError(Exception):
    """Base of every error simsearch raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def response_headers(self) -> dict[str, str]:
        """Extra HTTP headers the answer must carry (none for most errors)."""
        return {}


class BadInput(SimsearchError):
    """The caller sent something we refuse; always a 4xx."""

    status_code = 400
    code = "bad_input"


class EmptyInput(BadInput):
    """No bytes at all, or a request without the required file/field."""

    code = "empty_input"


class CorruptImage(BadInput):
    """The bytes identify as an image format but cannot be decoded (truncated, damaged)."""

    code = "corrupt_image"


class InvalidVector(BadInput):
    """A query vector with the wrong dimension or non-finite values."""

    code = "invalid_vector"


class InvalidParameter(BadInput):
    """A request parameter outside its allowed range (k, batch size, encoding...)."""

    code = "invalid_parameter"


class NoImages(InvalidParameter):
    """An index build found no image under its images root (nothing to publish)."""

    code = "no_images"


class MalformedBody(BadInput):
    """The body does not parse as its declared content type (broken multipart, no boundary,
    too many parts), caught before any domain code sees it."""

    code = "malformed_body"


class PayloadTooLarge(BadInput):
    """More bytes than the configured limit; refused before decoding."""

    status_code = 413
    code = "payload_too_large"


class ImageTooLarge(BadInput):
    """More pixels than the configured limit: a decompression bomb or a huge scan."""

    status_code = 413
    code = "image_too_large"


class UnsupportedMediaType(BadInput):
    """The bytes are not an image format we decode, whatever the name or content type says."""

    status_code = 415
    code = "unsupported_media_type"


class NotFound(SimsearchError):
    """An id or resource the caller asked for does not exist."""

    status_code = 404
    code = "not_found"


class Unauthorized(SimsearchError):
    """The router requires an API key and the request has none, or a wrong one."""

    status_code = 401
    code = "unauthorized"


class Forbidden(SimsearchError):
    """Well formed, but not allowed: a valid API key whose scope does not cover the route
    (a search key on admin), or a reference outside the embedder's allowed roots.

    A 403, not a 401: sending the same request again will never work. Not a `BadInput`:
    the request asks for what the service may not do on the caller's behalf (a confused
    deputy). The reason never says whether the thing exists, so a 403 is no existence
    oracle.
    """

    status_code = 403
    code = "forbidden"


class RateLimited(SimsearchError):
    """Over a rate limit: refused now, with the whole seconds until a request would pass.

    `retry_after_s` is an integer >= 1 because `Retry-After` in seconds is an integer and a
    0 would invite an immediate retry that is refused again.
    """

    status_code = 429
    code = "rate_limited"

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = max(1, int(retry_after_s))

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ConfigError(SimsearchError):
    """A setting is invalid or a resource it names is missing; raised at start-up."""

    code = "config_error"


class ModelWeightsMissing(ConfigError):
    """The model's pretrained weights cannot be found; the message says how to provide them."""

    code = "model_weights_missing"


class StorageError(SimsearchError):
    """The object store failed (unreachable, denied, throttled) after retries."""

    status_code = 503
    code = "storage_error"


class LocalWriteError(StorageError):
    """An object was read but its local copy could not be written (disk full, read-only,
    permissions): a problem of this machine, not of the store.

    Kept apart from `StorageError` because the shard treats the two differently: a store
    outage is waited out (the partition stays `loading`), while a local write failure is
    reported `failed` with its reason (an operator has to free or grow the disk).
    """

    code = "local_write_error"


class ObjectNotFound(StorageError):
    """The object key does not exist in the store."""

    status_code = 404
    code = "object_not_found"


class Overloaded(SimsearchError):
    """A bounded queue is full: refuse now (503) instead of queueing without limit."""

    status_code = 503
    code = "overloaded"


class NotServed(SimsearchError):
    """409: this shard does not serve what was asked *now*; another holder may.

    Not a 404: the thing exists, it is just not (or no longer, or not yet) loaded here,
    which during a rebalance or a version switch is normal. The router retries elsewhere.
    """

    status_code = 409
    code = "not_served"


class VersionNotLoaded(NotServed):
    """The requested index version is not held by this shard."""

    code = "version_not_loaded"


class PartitionsNotReady(NotServed):
    """Some requested partitions are not ready on this shard (not owned, loading, failed)."""

    code = "partitions_not_ready"


class CorruptIndex(SimsearchError):
    """Index files in the store are damaged, incomplete or unreadable.

    A 503, not a 500: the service is fine, the data it must serve is not (yet) — another
    version, a re-download or a rebuild fixes it.
    """

    status_code = 503
    code = "corrupt_index"


class Unavailable(SimsearchError):
    """The cluster cannot answer now (no shard, no embedder); retry later."""

    status_code = 503
    code = "unavailable"


class PartialAnswer(Unavailable):
    """`strict=true` and some partitions did not answer."""

    code = "partial_answer"


class TopologyUnknown(SimsearchError):
    """The shard count cannot be known yet (its source was never readable): not ready."""

    status_code = 503
    code = "topology_unknown"


class NoImagesRoot(SimsearchError):
    """The index stores relative keys but the router was not told what they are under."""

    status_code = 503
    code = "images_root_unknown"


class UpstreamError(SimsearchError):
    """Another service answered with something unusable (a 5xx, a broken body)."""

    status_code = 502
    code = "upstream_error"
