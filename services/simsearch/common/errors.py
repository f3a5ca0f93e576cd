"""One exception tree for the whole domain, mapped to HTTP status codes only at the edge.

    SimsearchError                     (500 unless a subclass says otherwise)
    ├── BadInput                       (4xx: the caller sent something we refuse)
    │   ├── EmptyInput                 400  empty body / no file
    │   ├── CorruptImage               400  bytes claim an image format but do not decode
    │   ├── InvalidVector              400  wrong dimension, NaN/inf
    │   ├── InvalidParameter           400  k out of range, bad option
    │   ├── PayloadTooLarge            413  over the byte limit
    │   ├── ImageTooLarge              413  over the pixel limit (decompression bomb)
    │   └── UnsupportedMediaType       415  not an image format we decode
    ├── NotFound                       404  unknown id or object key
    ├── ConfigError                    raised at start-up: a setting is wrong or a resource missing
    │   └── ModelWeightsMissing        the model's weight file cannot be found
    ├── StorageError                   503  the object store failed or is unreachable
    │   └── ObjectNotFound             404  the key does not exist
    └── Overloaded                     503  a queue is full; retry later (backpressure)

Services raise these; the FastAPI layer turns `status_code` + `reason` into a JSON body
`{"status": "error", "error": <code>, "detail": <reason>}`. Anything that is not a
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


class ObjectNotFound(StorageError):
    """The object key does not exist in the store."""

    status_code = 404
    code = "object_not_found"


class Overloaded(SimsearchError):
    """A bounded queue is full: refuse now (503) instead of queueing without limit."""

    status_code = 503
    code = "overloaded"
