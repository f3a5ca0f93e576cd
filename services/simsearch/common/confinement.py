"""Which object locations a service may read on a caller's behalf: its allowed roots.

The embedder's `POST /embed/keys` fetches URIs that arrive in requests. Unfenced, it is a
confused deputy: any caller could make it read any file its process can open and any
bucket its credentials reach, and tell a missing file (404) from an existing non-image
(415). `AllowedRoots.locate` turns a reference into a (store, key) pair *only* when it lies
under one of a fixed list of roots, and refuses everything else with one `Forbidden`.

The rules, in the order they are applied:

* a NUL byte, raw or percent-encoded, is malformed (`InvalidParameter`);
* a `..` segment is refused outright (`Forbidden`), raw or percent-encoded (`%2e%2e`,
  `..%2f`, double-encoded `%252e%252e`, backslash separators), *before* any normalisation
  could fold it away: there is no legitimate reason to send one;
* `file://` references are resolved with `os.path.realpath`, and so are the roots (at every
  check: a root folder may be created or re-pointed after start-up), so a symlink inside a
  root that points outside it lands outside;
* `s3://` references match a root when the bucket name is equal (exactly: S3 bucket names
  are case-sensitive) and the key starts with the root's prefix on a `/` boundary (root
  `s3://b/lib` admits `lib/x.jpg`, not `library/x.jpg`);
* outside every root the answer is the same `Forbidden`, whose reason depends only on the
  request text. Nothing outside the roots is ever opened or stat'ed by us (realpath only
  reads symlinks), so a missing file and an existing one get the same 403: no oracle.

What happens *inside* a root (regular files only, the size limit) is the store's job:
`FileStore` refuses FIFOs, devices and sockets without blocking on them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

from simsearch.common.errors import ConfigError, Forbidden, InvalidParameter
from simsearch.common.storage import (
    check_key,
    normalize_prefix,
    parse_file_uri,
    parse_s3_uri,
    split_object_uri,
    uri_scheme,
)

__all__ = ["AllowedRoots", "Root", "Target", "has_dot_dot", "parse_root", "parse_roots"]

# How many rounds of percent-decoding are looked through for `..` and NUL: one is what
# `file://` parsing does, more catches double encoding meant for some other decoder.
_DECODE_ROUNDS = 3
_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True)
class Root:
    """One allowed root: an S3 bucket (and key prefix) or a local directory.

    `uri` is canonical (`s3://bucket[/prefix]`, `file:///abs/dir`); `path` is the
    normalised directory of a file root, not yet resolved (that happens per check).
    """

    uri: str
    scheme: Literal["s3", "file"]
    bucket: str = ""
    prefix: str = ""
    path: str = ""

    def contains(self, other: Root) -> bool:
        """Whether every object under `other` is also under this root (start-up checks)."""
        if self.scheme != other.scheme:
            return False
        if self.scheme == "s3":
            return self.bucket == other.bucket and _under_prefix(other.prefix, self.prefix, True)
        mine, theirs = os.path.realpath(self.path), os.path.realpath(other.path)
        return theirs == mine or Path(theirs).is_relative_to(mine)

    def uri_for(self, key: str) -> str:
        """The full URI of a key relative to this root (how bare keys become references)."""
        check_key(key)
        if self.scheme == "s3":
            return f"{self.uri}/{key}"
        return f"{self.uri.rstrip('/')}/{quote(key)}"


@dataclass(frozen=True)
class Target:
    """Where an allowed reference is read: the store to open and the key inside it.

    For a file root `local_root` is the root's resolved directory and `key` is relative to
    it, so that the store never follows a symlink the check did not see.
    """

    root: Root
    store_uri: str
    key: str
    local_root: str | None = None


def parse_root(uri: str, *, relative_ok: bool = False) -> Root:
    """A root from a URI or a path; `ConfigError` when it is malformed.

    Relative paths are refused unless `relative_ok` (for `SIMSEARCH_STORE`, which has always
    accepted `./data`): a fence should not move with the working directory.
    """
    text = uri.strip()
    if not text:
        raise ConfigError("a root must be a non-empty URI")
    if "\x00" in text or has_dot_dot(text):
        raise ConfigError(f"root {uri!r} must not contain '..' segments or NUL bytes")
    scheme = uri_scheme(text)
    if scheme == "s3":
        bucket, rest = parse_s3_uri(text, ConfigError)
        prefix = normalize_prefix(rest, text)
        canonical = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return Root(canonical, "s3", bucket=bucket, prefix=prefix)
    if scheme == "file":
        return _file_root(parse_file_uri(text, ConfigError))
    if scheme is None:
        if not os.path.isabs(text) and not relative_ok:
            raise ConfigError(f"root {uri!r} must be an s3:// or file:// URI or an absolute path")
        return _file_root(Path(os.path.abspath(text)))
    raise ConfigError(f"unsupported root {uri!r}: use s3://bucket[/prefix] or file:///abs/dir")


def parse_roots(text: str) -> tuple[Root, ...]:
    """Comma-separated roots (blank items are skipped, so a trailing comma is harmless)."""
    return tuple(parse_root(item) for item in text.split(",") if item.strip())


def has_dot_dot(ref: str) -> bool:
    """Whether `ref` has a `..` segment in its raw or any percent-decoded form."""
    return any(".." in _SEPARATORS.split(form) for form in _decoded_forms(ref))


class AllowedRoots:
    """The fence: every reference is located under a root, or refused with `Forbidden`."""

    def __init__(self, roots: Sequence[Root], setting: str) -> None:
        """`setting` names the variable an operator changes; it goes into the reasons."""
        self.roots = tuple(roots)
        self.setting = setting

    def locate(self, ref: str) -> Target:
        """The store and key of an `s3://` or `file://` reference under an allowed root."""
        self._refuse_dot_dot(ref)
        scheme = uri_scheme(ref)
        if scheme == "s3":
            return self._locate_s3(ref)
        if scheme == "file":
            return self._locate_file(ref)
        raise InvalidParameter(f"unsupported object URI {ref!r}: use s3:// or file://")

    def locate_key(self, base: Root, key: str) -> Target:
        """A bare key relative to `base` (the default store), through the same checks."""
        self._refuse_dot_dot(key)
        return self.locate(base.uri_for(key))

    def _refuse_dot_dot(self, ref: str) -> None:
        if any("\x00" in form for form in _decoded_forms(ref)):
            raise InvalidParameter(f"object reference {ref!r} contains a NUL byte")
        if has_dot_dot(ref):
            raise Forbidden(
                f"{ref!r} has a '..' segment (raw or percent-encoded); references may not "
                "step out of a root"
            )

    def _outside(self, ref: str) -> Forbidden:
        # The same words whether or not the target exists: the reason is no oracle.
        return Forbidden(f"{ref!r} is not under a root this service may read ({self.setting})")

    def _locate_s3(self, ref: str) -> Target:
        store, key = split_object_uri(ref)  # 400 for a malformed URI or key
        bucket = store[len("s3://") :]
        for root in self.roots:
            if root.scheme == "s3" and root.bucket == bucket and _under_prefix(key, root.prefix):
                relative = key[len(root.prefix) + 1 :] if root.prefix else key
                return Target(root, root.uri, relative)
        raise self._outside(ref)

    def _locate_file(self, ref: str) -> Target:
        resolved = os.path.realpath(parse_file_uri(ref, InvalidParameter))
        for root in self.roots:
            if root.scheme != "file":
                continue
            base = os.path.realpath(root.path)
            if resolved == base:
                raise InvalidParameter(f"object URI {ref!r} names a directory, not an object")
            if Path(resolved).is_relative_to(base):
                key = Path(resolved).relative_to(base).as_posix()
                return Target(root, Path(base).as_uri(), key, local_root=base)
        raise self._outside(ref)


def _file_root(path: Path) -> Root:
    normal = os.path.normpath(path)
    return Root(Path(normal).as_uri(), "file", path=normal)


def _under_prefix(key: str, prefix: str, equal_ok: bool = False) -> bool:
    """`key` lies under `prefix` on a "/" boundary ("" is the whole bucket)."""
    if not prefix:
        return True
    return key.startswith(prefix + "/") or (equal_ok and key == prefix)


def _decoded_forms(ref: str) -> list[str]:
    """`ref` and its successive percent-decodings, until they stop changing."""
    forms = [ref]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms
