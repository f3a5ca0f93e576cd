"""One exception tree for the whole domain; HTTP status codes live only at the edge.

    SimsearchError                     a bug if it is only this (internal_error)
    ├── BadInput                       the caller sent something we refuse
    │   ├── EmptyInput                 empty body / no file
    │   ├── CorruptImage               bytes claim an image format but do not decode
    │   ├── InvalidVector              wrong dimension, NaN/inf
    │   ├── InvalidParameter           k out of range, bad option
    │   │   └── NoImages               an index build found no image to index
    │   ├── MalformedBody              the body does not parse as its content type
    │   ├── ValidationFailed           the request does not match its schema (pydantic)
    │   ├── PayloadTooLarge            over the byte limit
    │   ├── ImageTooLarge              over the pixel limit (decompression bomb)
    │   ├── UnsupportedMediaType       not an image format we decode
    │   └── UpstreamRejected           another service refused with a status of its own
    │                                  (`upstream_status`, kept as data, passed through)
    ├── NotFound                       unknown id or object key
    ├── Unauthorized                   an API key is required and missing or wrong
    ├── Forbidden                      not allowed: a key's scope, or outside the allowed roots
    ├── RateLimited                    over a rate limit; `retry_after_s` says when to retry
    ├── NotServed                      this shard does not serve it now; another may
    │   ├── VersionNotLoaded           the index version is not held here
    │   └── PartitionsNotReady         partitions not owned / loading / failed here
    ├── ConfigError                    raised at start-up: a setting is wrong or a resource missing
    │   └── ModelWeightsMissing        the model's weight file cannot be found
    ├── StorageError                   the object store failed or is unreachable
    │   ├── LocalWriteError            a local copy could not be written (disk full, read-only)
    │   └── ObjectNotFound             the key does not exist
    ├── CorruptIndex                   index files damaged, incomplete or unreadable
    ├── Unavailable                    the cluster cannot answer now (no shard, embedder)
    │   └── PartialAnswer              strict=true and some partitions did not answer
    ├── TopologyUnknown                the shard count cannot be known yet
    ├── NoImagesRoot                   the router does not know where images live
    ├── UpstreamError                  another service answered with something unusable
    ├── UpstreamFailure                another service gave no HTTP answer (`unreachable`,
    │                                  `timeout` say how); callers catch it, it is data
    └── Overloaded                     a queue is full; retry later (backpressure)

A class carries what the error *means*: a stable `code`, a `reason` for a person, and the
data a caller may act on (`retry_after_s`, `url`, `unreachable`...). Which HTTP status
and headers that is, is the edge's business: `simsearch.common.http.status_for` resolves
a class by its MRO in one table, and every HTTP answer built from an error (the FastAPI
handlers, the raw-ASGI fast path, the embedder's per-key `errors`) goes through it. The
body is `{"status": "error", "error": <code>, "detail": <reason>, "request_id": ...}`.
Anything that is not a `SimsearchError` is a bug and becomes a 500 with a request id to
look up in the logs.

`error_for_code` goes the other way, for a service that passes another's refusal on (the
router, an embedder's 4xx): the tree's own class for a code, so the edge maps it again.
"""

from __future__ import annotations

from collections.abc import Iterator


class SimsearchError(Exception):
    """Base of every error simsearch raises on purpose."""

    code: str = "internal_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadInput(SimsearchError):
    """The caller sent something we refuse: sending it again unchanged will not work."""

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


class ValidationFailed(BadInput):
    """The request does not match its declared schema (FastAPI's or pydantic's validation);
    the reason names each field at fault. Built by the edge, not raised by domain code."""

    code = "validation_error"


class PayloadTooLarge(BadInput):
    """More bytes than the configured limit; refused before decoding."""

    code = "payload_too_large"


class ImageTooLarge(BadInput):
    """More pixels than the configured limit: a decompression bomb or a huge scan."""

    code = "image_too_large"


class UnsupportedMediaType(BadInput):
    """The bytes are not an image format we decode, whatever the name or content type says."""

    code = "unsupported_media_type"


class UpstreamRejected(BadInput):
    """Another service refused the request with a status the tree's class for its code
    would not get here (a proxy's bare 429, a framework's 405, a code we do not know).

    The router passes an embedder's refusal on unchanged; where the code names one of
    this tree's classes it raises that class instead (`error_for_code`), so only these
    leftovers carry a status, as data (`upstream_status`), which the edge answers with.
    """

    def __init__(self, upstream_status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.upstream_status = upstream_status
        self.code = code


class InvalidFilter(BadInput):
    """A search filter that does not fit the collection's metadata: an unknown field, a
    value of the wrong type, or an operator the field's type does not support."""

    code = "invalid_filter"


class FilterTooLarge(InvalidFilter):
    """A search filter over the size limits (nodes, depth, `in` values, string length)."""

    code = "filter_too_large"


class NotFound(SimsearchError):
    """An id or resource the caller asked for does not exist."""

    code = "not_found"


class CollectionNotFound(NotFound):
    """No collection of that name: no shard reports any version of it (router), or the
    shard does not poll it (shard)."""

    code = "collection_not_found"


class Unauthorized(SimsearchError):
    """The router requires an API key and the request has none, or a wrong one."""

    code = "unauthorized"


class Forbidden(SimsearchError):
    """Well formed, but not allowed: a valid API key whose scope does not cover the route
    (a search key on admin), or a reference outside the embedder's allowed roots.

    Not `Unauthorized`: sending the same request again will never work. Not a `BadInput`:
    the request asks for what the service may not do on the caller's behalf (a confused
    deputy). The reason never says whether the thing exists, so the refusal is no
    existence oracle.
    """

    code = "forbidden"


class RateLimited(SimsearchError):
    """Over a rate limit: refused now, with the whole seconds until a request would pass.

    `retry_after_s` is an integer >= 1 because the edge sends it as `Retry-After`, whose
    seconds are an integer, and a 0 would invite an immediate retry that is refused again.
    """

    code = "rate_limited"

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = max(1, int(retry_after_s))


class ConfigError(SimsearchError):
    """A setting is invalid or a resource it names is missing; raised at start-up."""

    code = "config_error"


class ModelWeightsMissing(ConfigError):
    """The model's pretrained weights cannot be found; the message says how to provide them."""

    code = "model_weights_missing"


class StorageError(SimsearchError):
    """The object store failed (unreachable, denied, throttled) after retries."""

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

    code = "object_not_found"


class Overloaded(SimsearchError):
    """A bounded queue is full: refuse now, to be retried, instead of queueing without limit."""

    code = "overloaded"


class NotServed(SimsearchError):
    """This shard does not serve what was asked *now*; another holder may.

    Not `NotFound`: the thing exists, it is just not (or no longer, or not yet) loaded here,
    which during a rebalance or a version switch is normal. The router retries elsewhere.
    """

    code = "not_served"


class VersionNotLoaded(NotServed):
    """The requested index version is not held by this shard."""

    code = "version_not_loaded"


class PartitionsNotReady(NotServed):
    """Some requested partitions are not ready on this shard (not owned, loading, failed)."""

    code = "partitions_not_ready"


class CorruptIndex(SimsearchError):
    """Index files in the store are damaged, incomplete or unreadable.

    Not a bug (whose answer is a 500): the service is fine, the data it must serve is not
    (yet) — another version, a re-download or a rebuild fixes it.
    """

    code = "corrupt_index"


class Unavailable(SimsearchError):
    """The cluster cannot answer now (no shard, no embedder); retry later."""

    code = "unavailable"


class PartialAnswer(Unavailable):
    """`strict=true` and some partitions did not answer."""

    code = "partial_answer"


class TopologyUnknown(SimsearchError):
    """The shard count cannot be known yet (its source was never readable): not ready."""

    code = "topology_unknown"


class NoImagesRoot(SimsearchError):
    """The index stores relative keys but the router was not told what they are under."""

    code = "images_root_unknown"


class UpstreamError(SimsearchError):
    """Another service answered with something unusable (a 5xx, a broken body)."""

    code = "upstream_error"


class UpstreamFailure(SimsearchError):
    """A call to another service did not produce an HTTP answer (refused, timed out...).

    `unreachable` is True only when no connection could be made (refused, unknown host):
    such a shard is marked down at once instead of waiting for the next poll to notice. A
    connection that breaks mid-answer is a failure of that call only (it may be a stale
    keep-alive connection the server had just closed), retried elsewhere like an error.
    Every caller catches it and decides (retry, mark down, `Unavailable`); its text is
    `"<url>: <reason>"`, as the shard registry records it.
    """

    code = "upstream_failure"

    def __init__(self, url: str, reason: str, *, unreachable: bool, timeout: bool) -> None:
        super().__init__(reason)
        self.url = url
        self.unreachable = unreachable
        self.timeout = timeout

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


def _tree(root: type[SimsearchError]) -> Iterator[type[SimsearchError]]:
    for child in root.__subclasses__():
        yield child
        yield from _tree(child)


# The classes a code names, for those built from a reason alone (the others need data that
# a code does not carry: `RateLimited`'s seconds, `UpstreamFailure`'s url).
_BY_CODE: dict[str, type[SimsearchError]] = {
    cls.code: cls for cls in _tree(SimsearchError) if cls.__init__ is SimsearchError.__init__
}


def error_for_code(code: str | None, reason: str) -> SimsearchError:
    """The tree's error for another service's `error` code, so the edge maps it again.

    A code the tree does not know (or none) is a `BadInput` that keeps the code as sent
    (or `bad_input`): the caller learns what the other service said, unchanged.
    """
    cls = _BY_CODE.get(code or BadInput.code)
    if cls is not None:
        return cls(reason)
    err = BadInput(reason)
    err.code = code or BadInput.code
    return err
