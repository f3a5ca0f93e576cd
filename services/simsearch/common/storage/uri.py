"""Store and object URIs: parse `s3://bucket/prefix`, `file:///abs/dir` or a bare path,
and open the store they name.

A store URI comes from settings, so a malformed one is a `ConfigError` at start-up; an
object URI often arrives in a request (embed-by-key), so a malformed one is
`InvalidParameter` (400). The parsers take the error class to raise for that reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.request import url2pathname

from simsearch.common.errors import ConfigError, InvalidParameter, SimsearchError
from simsearch.common.storage.base import ObjectStore, check_key
from simsearch.common.storage.file import FileStore
from simsearch.common.storage.s3 import S3Options, S3Store, is_bucket_name

__all__ = [
    "is_uri",
    "open_store",
    "parse_file_uri",
    "parse_s3_uri",
    "split_object_uri",
    "uri_scheme",
]

# A scheme of two or more letters, so that a Windows drive ("C:\\data") stays a bare path.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def uri_scheme(ref: str) -> str | None:
    """The lower-cased URI scheme of `ref`, or None for a bare path (incl. "C:\\x")."""
    match = _SCHEME_RE.match(ref)
    return match.group(1).lower() if match else None


def parse_s3_uri(uri: str, error: type[SimsearchError]) -> tuple[str, str]:
    """`s3://bucket/rest` -> (bucket, rest); the rest is not normalized here."""
    rest = uri[len("s3://") :] if uri[:5].lower() == "s3://" else ""
    bucket, _, path = rest.partition("/")
    if not is_bucket_name(bucket):
        raise error(f"S3 URI {uri!r} must look like s3://bucket[/prefix]")
    return bucket, path


def parse_file_uri(uri: str, error: type[SimsearchError]) -> Path:
    """`file:///abs/path` (or `file://localhost/...`) -> an absolute local path."""
    if uri[:7].lower() != "file://":
        raise error(f"file URI {uri!r} must look like file:///absolute/path")
    authority, slash, path = uri[len("file://") :].partition("/")
    if authority not in ("", "localhost") or not slash:
        raise error(
            f"file URI {uri!r} names host {authority!r}; use file:///absolute/path (three slashes)"
        )
    local = Path(url2pathname("/" + path))
    if not local.is_absolute():
        raise error(f"file URI {uri!r} must name an absolute path")
    return Path(os.path.normpath(local))


def is_uri(ref: str) -> bool:
    """Whether `ref` is an s3:// or file:// URI, as opposed to a key or a bare path."""
    return isinstance(ref, str) and ref[:7].lower().startswith(("s3://", "file://"))


def open_store(uri: str, s3: S3Options | None = None) -> ObjectStore:
    """The store for a root URI: "s3://bucket/prefix", "file:///abs/dir" or a bare path.

    A bare path is a `FileStore` made absolute against the working directory, so that
    `--store ./data` works on a laptop. Anything else is a configuration mistake.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"store URI must be a non-empty string, got {uri!r}")
    scheme = uri_scheme(uri)
    if scheme is None:
        return FileStore(os.path.abspath(uri))
    if scheme == "s3":
        bucket, prefix = parse_s3_uri(uri, ConfigError)
        return S3Store(bucket, prefix, s3)
    if scheme == "file":
        return FileStore(parse_file_uri(uri, ConfigError))
    raise ConfigError(
        f"unsupported store URI {uri!r}: use s3://bucket/prefix, file:///abs/dir or a path"
    )


def split_object_uri(uri: str) -> tuple[str, str]:
    """Split an object's full URI into (store root URI, key) for `open_store(root).get(key)`.

    "s3://bucket/a/b.jpg" -> ("s3://bucket", "a/b.jpg"); "file:///x/y/b.jpg" ->
    ("file:///x/y", "b.jpg"); a bare path splits like its file:// URI. Object URIs often
    arrive in requests (embed-by-key), so a malformed one is `InvalidParameter` (400).
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidParameter(f"object URI must be a non-empty string, got {uri!r}")
    scheme = uri_scheme(uri)
    if scheme == "s3":
        bucket, key = parse_s3_uri(uri, InvalidParameter)
        if not key:
            raise InvalidParameter(f"object URI {uri!r} names a bucket but no key")
        return f"s3://{bucket}", check_key(key)
    if scheme == "file":
        path = parse_file_uri(uri, InvalidParameter)
    elif scheme is None:
        path = Path(os.path.abspath(uri))
    else:
        raise InvalidParameter(f"unsupported object URI {uri!r}: use s3:// or file://")
    if uri.endswith("/") or path == path.parent:
        raise InvalidParameter(f"object URI {uri!r} names a directory, not an object")
    return path.parent.as_uri(), path.name
