"""One object-store interface over S3 (AWS, MinIO, moto) and a local directory.

Every service reads images, weights and index shards through `ObjectStore`, so the same
code runs against a laptop directory (`file:///...`), a MinIO in the cluster, or AWS S3.
The store is addressed by a root URI (`s3://bucket/prefix`, `file:///abs/dir`) and every
object by a *key* relative to that root, always with "/" separators.

Failures surface as the domain's exceptions, never as botocore or OS errors:

* a key that does not exist            -> `ObjectNotFound` (404)
* a key naming a FIFO, device, socket  -> `ObjectNotFound` too: only regular files are
  or directory (file store)               objects, and reading one never blocks
* a bucket that does not exist         -> `StorageError` (a deployment mistake, not a 404)
* unreachable endpoint, timeouts, etc. -> `StorageError` naming the endpoint and the object
* a key escaping the root ("..")       -> `InvalidParameter`
* a malformed store URI                -> `ConfigError` (store URIs come from settings)

Credentials are never passed in code: boto3 reads them from the environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, web identity, instance profile...), which
is how Kubernetes secrets and IRSA provide them.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import quote
from urllib.request import url2pathname

import boto3.session
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3transfer.exceptions import RetriesExceededError

from simsearch.common.errors import (
    ConfigError,
    InvalidParameter,
    LocalWriteError,
    ObjectNotFound,
    PayloadTooLarge,
    SimsearchError,
    StorageError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = [
    "FileStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Options",
    "S3Store",
    "is_uri",
    "open_store",
    "split_object_uri",
]

_MIB = 1024 * 1024
# Files bigger than this go through S3 multipart upload: parts are retried one by one and
# uploaded in parallel, so a large index shard does not restart from zero on a hiccup.
_MULTIPART_THRESHOLD = 8 * _MIB
_MULTIPART_CHUNKSIZE = 8 * _MIB
_TRANSFER_CONCURRENCY = 8
_COPY_BUFSIZE = _MIB
# Temp files of in-flight atomic writes live next to their target (so os.replace stays a
# same-filesystem rename) and carry this suffix so that `FileStore.list` can skip them.
_TEMP_SUFFIX = ".simsearch-tmp"
# SigV4 presigned URLs are valid for at most seven days.
_MAX_PRESIGN_S = 7 * 24 * 3600
# A scheme of two or more letters, so that a Windows drive ("C:\\data") stays a bare path.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# HEAD responses carry no body, so S3 reports any missing thing as a bare "404".
_HEAD_NOT_FOUND = frozenset({"404", "NotFound"})


@dataclass(frozen=True)
class S3Options:
    """How to reach S3; the same options serve AWS, MinIO and moto.

    Credentials are deliberately absent: they come from the standard AWS environment
    (variables, web identity, instance profile) so that no secret ever sits in a config
    file or a command line.
    """

    endpoint_url: str | None = None  # MinIO / moto / custom endpoint; None = AWS
    region: str = "us-east-1"
    path_style: bool = True  # MinIO needs path-style addressing
    max_attempts: int = 5  # botocore retry mode "standard"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_pool_connections: int = 32

    def __post_init__(self) -> None:
        """Refuse nonsense at start-up rather than at the first request."""
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"S3 endpoint URL {self.endpoint_url!r} must start with http:// or https://"
            )
        if not self.region:
            raise ConfigError("S3 region must not be empty")
        if self.max_attempts < 1:
            raise ConfigError(f"S3 max_attempts must be at least 1, got {self.max_attempts}")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError(
                "S3 timeouts must be positive, got "
                f"connect={self.connect_timeout_s} read={self.read_timeout_s}"
            )
        if self.max_pool_connections < 1:
            raise ConfigError(
                f"S3 max_pool_connections must be at least 1, got {self.max_pool_connections}"
            )


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key relative to the store root, and its size in bytes."""

    key: str
    size: int


class ObjectStore(ABC):
    """A flat namespace of byte objects under a root URI, addressed by "/"-separated keys.

    Implementations are safe to share between threads: services keep one store per
    process and call it from the request thread pool.
    """

    uri: str  # the root URI, e.g. "s3://bucket/prefix" or "file:///abs/dir"

    def ensure_root(self) -> bool:
        """Create the container of this store if it is missing (bucket or folder).

        Returns True when it had to be created. For set-ups that start from nothing (a
        fresh MinIO); normal operation never creates buckets by itself.
        """
        return False

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """The whole object, or `PayloadTooLarge` if it has more than `max_bytes` bytes.

        Exists so that a request naming a huge object cannot make us buffer it: at most
        `max_bytes + 1` bytes are ever read.
        """

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any object there; readers never see half."""

    @abstractmethod
    def upload_file(self, key: str, path: Path) -> None:
        """Store the local file `path` under `key`, streaming it (multipart on S3)."""

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None:
        """Write the object to the local `path` atomically, creating parent directories.

        A crash or error mid-download leaves no partial file at `path`, so a cache that
        checks `path.is_file()` never trusts a truncated download.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (store failures still raise)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix), recursively."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (idempotent cleanup)."""

    @abstractmethod
    def url_for(self, key: str) -> str:
        """The full URI of `key`, which `split_object_uri` and `open_store` turn back."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# --------------------------------------------------------------------------- keys


def _check_key(key: str, *, prefix: bool = False) -> str:
    """Refuse keys that are empty, absolute or that could step outside the store root.

    The same rules hold for both backends so that a key accepted by a local test store is
    accepted by S3 and vice versa; on a directory store they are what keeps a request from
    reading `../../etc/passwd`.
    """
    what = "prefix" if prefix else "key"
    if not isinstance(key, str):
        raise InvalidParameter(f"object {what} must be a string, got {type(key).__name__}")
    if not key:
        if prefix:
            return key
        raise InvalidParameter("object key must not be empty")
    if "\\" in key or "\x00" in key:
        raise InvalidParameter(f"object {what} {key!r} must use '/' separators and no NUL")
    if key.startswith("/"):
        raise InvalidParameter(f"object {what} {key!r} must be relative, not absolute")
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts.pop()  # "images/" is a fine prefix
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidParameter(
                f"object {what} {key!r} has an empty, '.' or '..' segment; keys stay inside "
                "the store root"
            )
    return key


# ---------------------------------------------------------------------- file store


def _temp_sibling(path: Path) -> Path:
    """A unique hidden name next to `path`, so the final os.replace is an atomic rename."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Run `write` into a temp file next to `path`, fsync it, then rename it over `path`.

    Readers see either the old file or the complete new one, never a torn write; the
    fsync makes the rename durable content rather than an empty file after a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "xb") as out:  # mode 0o666 & ~umask, like any other new file
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileStore(ObjectStore):
    """Objects as files under a local directory: development, tests, single-node setups.

    Keys map to nested paths ("a/b.jpg" -> <root>/a/b.jpg). Writes are atomic renames, so
    a concurrent reader never sees a half-written file.
    """

    def __init__(self, root: Path | str, *, follow_symlinks: bool = True) -> None:
        """Bind to the absolute directory `root`; it is created on the first write.

        `follow_symlinks=False` makes reads refuse a key whose last component is a symlink
        (`O_NOFOLLOW`): the embedder resolves references itself before reading, and must
        not follow a link swapped in after its check.
        """
        path = Path(root)
        if not path.is_absolute():
            raise ConfigError(f"file store root {str(root)!r} must be an absolute path")
        self._root = Path(os.path.normpath(path))
        self._follow_symlinks = follow_symlinks
        self.uri = self._root.as_uri()

    def ensure_root(self) -> bool:
        """Create the root folder unless it exists."""
        if self._root.is_dir():
            return False
        self._root.mkdir(parents=True, exist_ok=True)
        return True

    def _path(self, key: str) -> Path:
        """The file behind `key`, guaranteed to lie under the root."""
        _check_key(key)
        path = self._root.joinpath(*key.split("/"))
        # Belt and braces for platform quirks (a "C:" segment on Windows re-roots a path).
        if not path.is_relative_to(self._root):
            raise InvalidParameter(f"object key {key!r} escapes the store root {self.uri}")
        return path

    def _missing(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {self.url_for(key)} does not exist")

    def _failed(self, action: str, key: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot {action} {self.url_for(key)}: {exc.strerror or exc}")

    def _open_regular(self, key: str) -> tuple[int, int]:
        """Open the file behind `key` for reading; (descriptor, size) of a regular file.

        Opened with O_NONBLOCK so that a FIFO without a writer cannot park the calling
        thread forever, then checked with fstat on the descriptor itself (no race with a
        rename): FIFOs, devices, sockets and directories are not objects. Only a regular
        file's descriptor is returned; the caller closes it.
        """
        path = self._path(key)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        if not self._follow_symlinks:
            flags |= getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP and not self._follow_symlinks:
                raise ObjectNotFound(
                    f"object {self.url_for(key)} is a symbolic link, which is not followed"
                ) from None
            if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
                raise self._not_regular(key) from None
            raise self._failed("read", key, exc) from exc
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._failed("stat", key, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._not_regular(key)
        return fd, st.st_size

    def _not_regular(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {self.url_for(key)} is not a regular file")

    def get(self, key: str) -> bytes:
        """Read the file whole (regular files only)."""
        fd, _ = self._open_regular(key)
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as exc:
            raise self._failed("read", key, exc) from exc

    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """Check the size via fstat, then read at most `max_bytes + 1` bytes (files grow)."""
        if max_bytes < 0:
            raise InvalidParameter(f"max_bytes must be >= 0, got {max_bytes}")
        fd, size = self._open_regular(key)
        try:
            with os.fdopen(fd, "rb") as f:
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"object {self.url_for(key)} has {size} bytes, over the limit of "
                        f"{max_bytes}"
                    )
                data = f.read(max_bytes + 1)
        except OSError as exc:
            raise self._failed("read", key, exc) from exc
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"object {self.url_for(key)} has more than {max_bytes} bytes, over the limit"
            )
        return data

    def put(self, key: str, data: bytes) -> None:
        """Write to a temp file and rename it into place."""
        path = self._path(key)

        def write(out: IO[bytes]) -> None:
            out.write(data)

        try:
            _write_atomically(path, write)
        except OSError as exc:
            raise self._failed("write", key, exc) from exc

    def upload_file(self, key: str, path: Path) -> None:
        """Copy the local file in atomically; a missing source raises FileNotFoundError."""
        target = self._path(key)
        with open(path, "rb") as src:  # a missing source is the caller's bug, not storage's
            try:
                _write_atomically(target, lambda out: shutil.copyfileobj(src, out, _COPY_BUFSIZE))
            except OSError as exc:
                raise self._failed("write", key, exc) from exc

    def download_file(self, key: str, path: Path) -> None:
        """Copy the object out to `path` through a temp file and a rename."""
        source = self._path(key)
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below, after the missing-key check
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            raise self._failed("read", key, exc) from exc
        with src:
            try:
                _write_atomically(
                    Path(path), lambda out: shutil.copyfileobj(src, out, _COPY_BUFSIZE)
                )
            except OSError as exc:
                raise LocalWriteError(
                    f"cannot download {self.url_for(key)} to {path}: {exc.strerror or exc}"
                ) from exc

    def exists(self, key: str) -> bool:
        """True for a regular file; a directory is not an object."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """The file's size from stat."""
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            raise self._failed("stat", key, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise self._missing(key)  # a directory is not an object
        return st.st_size

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk only the directory the prefix points into, then sort like S3 does.

        Keys are sorted as strings, which is S3's order (code points sort like UTF-8
        bytes); a directory walk alone would not be ("a/b" must come after "a-c").
        """
        _check_key(prefix, prefix=True)
        head, _, _ = prefix.rpartition("/")
        base = self._root.joinpath(*head.split("/")) if head else self._root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if name.endswith(_TEMP_SUFFIX):
                    continue  # an atomic write in flight, not an object yet
                key = name if rel == "." else f"{rel}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                found.append(ObjectInfo(key=key, size=st.st_size))
        found.sort(key=lambda info: info.key)
        yield from found

    def delete(self, key: str) -> None:
        """Unlink the file; a missing file (or a directory) means nothing to delete."""
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return
        except PermissionError as exc:
            if path.is_dir():  # unlink(dir) is EPERM on Linux; a directory is no object
                return
            raise self._failed("delete", key, exc) from exc
        except OSError as exc:
            raise self._failed("delete", key, exc) from exc

    def url_for(self, key: str) -> str:
        """`file:///root/` + the percent-encoded key, as `Path.as_uri` would write it."""
        _check_key(key)
        return f"{self.uri.rstrip('/')}/{quote(key)}"


# ------------------------------------------------------------------------ S3 store


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    text = f"{error.get('Code', 'error')}: {error.get('Message', '') or exc}"
    return f"{text} (HTTP {status})" if status else text


class S3Store(ObjectStore):
    """Objects in an S3 bucket under an optional key prefix (AWS, MinIO, moto).

    One boto3 client per store, made from its own `boto3.session.Session`: clients are
    thread-safe and pool connections, sessions are not thread-safe, and the default
    session is global state that tests and other libraries may mutate.
    """

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        """Build the client now (no network traffic); failures surface on first use."""
        if not _BUCKET_RE.match(bucket):
            raise ConfigError(f"invalid S3 bucket name {bucket!r}")
        self._bucket = bucket
        self._prefix = _normalize_prefix(prefix, f"s3://{bucket}/{prefix}")
        self._options = options or S3Options()
        self.uri = f"s3://{bucket}/{self._prefix}" if self._prefix else f"s3://{bucket}"
        self._session = boto3.session.Session(region_name=self._options.region)
        self._lock = threading.Lock()  # guards the session and the signer cache
        self._client = self._make_client(self._options.endpoint_url)
        self._endpoint = self._client.meta.endpoint_url
        self._signers: dict[str, S3Client] = {}
        self._bucket_seen = False
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_THRESHOLD,
            multipart_chunksize=_MULTIPART_CHUNKSIZE,
            max_concurrency=min(_TRANSFER_CONCURRENCY, self._options.max_pool_connections),
            use_threads=True,
        )

    def _make_client(self, endpoint_url: str | None) -> S3Client:
        opts = self._options
        # botocore >= 1.36 adds CRC checksums to every upload by default; several
        # S3-compatible servers (older MinIO, Ceph) reject them, so custom endpoints only
        # send checksums an operation requires. AWS keeps botocore's default.
        checksums: Literal["when_supported", "when_required"] = (
            "when_required" if opts.endpoint_url is not None else "when_supported"
        )
        config = Config(
            region_name=opts.region,
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": opts.max_attempts},
            connect_timeout=opts.connect_timeout_s,
            read_timeout=opts.read_timeout_s,
            max_pool_connections=opts.max_pool_connections,
            s3={"addressing_style": "path" if opts.path_style else "auto"},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        with self._lock:
            return self._session.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        """The bucket key of a store key: prefix + "/" + key, never a double slash."""
        _check_key(key)
        return f"{self._prefix}/{key}" if self._prefix else key

    def ensure_root(self) -> bool:
        """Create the bucket unless it exists (in the client's region)."""
        if not self._bucket_missing():
            return False
        args: dict[str, Any] = {"Bucket": self._bucket}
        if self._options.region != "us-east-1":  # us-east-1 refuses an explicit constraint
            args["CreateBucketConfiguration"] = {"LocationConstraint": self._options.region}
        with self._errors("create bucket", self.uri):
            try:
                self._client.create_bucket(**args)
            except ClientError as exc:
                if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                return False
        self._bucket_seen = True
        return True

    def _bucket_missing(self) -> bool:
        """Whether the bucket itself is absent; HEAD answers a bare 404 for both cases.

        Asked only after a HEAD 404, and only until the bucket has been seen once, so
        `exists()` on missing keys costs one request, not two, in steady state.
        """
        if self._bucket_seen:
            return False
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            return _error_code(exc) in _HEAD_NOT_FOUND or _error_code(exc) == "NoSuchBucket"
        except BotoCoreError:
            return False  # the original error will be reported instead
        self._bucket_seen = True  # a benign race: at worst one extra HeadBucket
        return False

    def _no_bucket(self) -> StorageError:
        return StorageError(
            f"S3 bucket {self._bucket!r} does not exist at {self._endpoint} "
            f"(store {self.uri}); create it or fix the store URI"
        )

    def _from_client_error(self, exc: ClientError, action: str, target: str) -> SimsearchError:
        code = _error_code(exc)
        if code == "NoSuchKey":
            return ObjectNotFound(f"object {target} does not exist")
        if code == "NoSuchBucket":
            return self._no_bucket()
        if code in _HEAD_NOT_FOUND:
            return (
                self._no_bucket()
                if self._bucket_missing()
                else ObjectNotFound(f"object {target} does not exist")
            )
        return StorageError(
            f"S3 {action} {target} at {self._endpoint} failed: {_error_message(exc)}"
        )

    @contextmanager
    def _errors(self, action: str, target: str) -> Iterator[None]:
        """Translate botocore/boto3 failures into the domain's errors with full context."""
        try:
            yield
        except ClientError as exc:
            raise self._from_client_error(exc, action, target) from exc
        except S3UploadFailedError as exc:
            # boto3 flattens the ClientError into a message; the original is the context.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                raise self._from_client_error(cause, action, target) from exc
            if "NoSuchBucket" in str(exc):
                raise self._no_bucket() from exc
            raise StorageError(f"S3 {action} {target} at {self._endpoint} failed: {exc}") from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise StorageError(
                f"cannot reach S3 endpoint {self._endpoint} to {action} {target} after "
                f"{self._options.max_attempts} attempt(s): {exc}"
            ) from exc
        except ReadTimeoutError as exc:
            raise StorageError(
                f"S3 endpoint {self._endpoint} timed out ({self._options.read_timeout_s}s) "
                f"during {action} {target}: {exc}"
            ) from exc
        except NoCredentialsError as exc:
            raise StorageError(
                f"no AWS credentials found to {action} {target} at {self._endpoint}; set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role"
            ) from exc
        except (BotoCoreError, RetriesExceededError) as exc:
            raise StorageError(f"S3 {action} {target} at {self._endpoint} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        """GetObject and read the body (inside the error mapping: reads can time out)."""
        target = self.url_for(key)
        with self._errors("get", target):
            resp = self._client.get_object(Bucket=self._bucket, Key=self._key(key))
            with resp["Body"] as body:
                return body.read()

    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """One GetObject: refuse on Content-Length, and still read at most max_bytes + 1."""
        if max_bytes < 0:
            raise InvalidParameter(f"max_bytes must be >= 0, got {max_bytes}")
        target = self.url_for(key)
        with self._errors("get", target):
            resp = self._client.get_object(Bucket=self._bucket, Key=self._key(key))
            with resp["Body"] as body:
                length = resp.get("ContentLength")
                if length is not None and length > max_bytes:
                    raise PayloadTooLarge(
                        f"object {target} has {length} bytes, over the limit of {max_bytes}"
                    )
                chunks: list[bytes] = []
                remaining = max_bytes + 1
                while remaining > 0:
                    chunk = body.read(min(remaining, _MIB))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"object {target} has more than {max_bytes} bytes, over the limit"
            )
        return data

    def put(self, key: str, data: bytes) -> None:
        """PutObject; S3 makes the new version visible only once it is complete."""
        target = self.url_for(key)
        with self._errors("put", target):
            self._client.put_object(Bucket=self._bucket, Key=self._key(key), Body=data)

    def upload_file(self, key: str, path: Path) -> None:
        """Transfer-manager upload: multipart with parallel, individually retried parts."""
        if not Path(path).is_file():
            raise FileNotFoundError(errno.ENOENT, "no such file to upload", str(path))
        target = self.url_for(key)
        with self._errors("upload", target):
            self._client.upload_file(str(path), self._bucket, self._key(key), Config=self._transfer)

    def download_file(self, key: str, path: Path) -> None:
        """Transfer-manager download into a temp sibling, renamed over `path` at the end."""
        target = self.url_for(key)
        dest = Path(path)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalWriteError(
                f"cannot create {dest.parent} to download {target}: {exc}"
            ) from exc
        tmp = _temp_sibling(dest)
        try:
            with self._errors("download", target):
                self._client.download_file(
                    self._bucket, self._key(key), str(tmp), Config=self._transfer
                )
            os.replace(tmp, dest)
        except OSError as exc:  # botocore failures were translated above: this is local
            raise LocalWriteError(f"cannot download {target} to {dest}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """HeadObject; only a missing object is False, a missing bucket still raises."""
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """HeadObject's Content-Length."""
        target = self.url_for(key)
        with self._errors("head", target):
            resp = self._client.head_object(Bucket=self._bucket, Key=self._key(key))
        return int(resp["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """ListObjectsV2 page by page (1000 keys each), in S3's key order."""
        _check_key(prefix, prefix=True)
        root = f"{self._prefix}/" if self._prefix else ""
        target = f"{self.uri.rstrip('/')}/{prefix}"
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("list", target):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=root + prefix):
                for obj in page.get("Contents", []):
                    key = obj.get("Key", "")[len(root) :]
                    if key and not key.endswith("/"):  # skip console "folder" markers
                        yield ObjectInfo(key=key, size=int(obj.get("Size", 0)))

    def delete(self, key: str) -> None:
        """DeleteObject, which S3 already treats as success for a missing key."""
        target = self.url_for(key)
        with self._errors("delete", target):
            self._client.delete_object(Bucket=self._bucket, Key=self._key(key))

    def url_for(self, key: str) -> str:
        """`s3://bucket/prefix/key`, the form the AWS CLI and `split_object_uri` take."""
        return f"s3://{self._bucket}/{self._key(key)}"

    def presigned_get_url(
        self, key: str, expires_s: int = 3600, public_endpoint_url: str | None = None
    ) -> str:
        """A time-limited GET URL that needs no credentials, e.g. for a browser.

        Inside a cluster the store is reached at an internal address (http://minio:9000)
        that clients outside cannot resolve; `public_endpoint_url` names the address they
        use. SigV4 signs the Host header, so the URL is *signed* for that endpoint by a
        client bound to it, not produced by rewriting the host of an internal URL (which
        would break the signature). Signing is local: no request is made.
        """
        if not 1 <= expires_s <= _MAX_PRESIGN_S:
            raise InvalidParameter(
                f"expires_s must be between 1 and {_MAX_PRESIGN_S} (7 days), got {expires_s}"
            )
        client = self._client
        if public_endpoint_url is not None and public_endpoint_url != self._options.endpoint_url:
            client = self._signer(public_endpoint_url)
        target = self.url_for(key)
        with self._errors("presign", target):
            return client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._key(key)},
                ExpiresIn=expires_s,
            )

    def _signer(self, endpoint_url: str) -> S3Client:
        """A cached client bound to `endpoint_url`, used only to sign URLs."""
        if not endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"public S3 endpoint URL {endpoint_url!r} must start with http:// or https://"
            )
        with self._lock:
            signer = self._signers.get(endpoint_url)
        if signer is None:
            signer = self._make_client(endpoint_url)
            with self._lock:
                signer = self._signers.setdefault(endpoint_url, signer)
        return signer


# ------------------------------------------------------------------------- parsing


def _normalize_prefix(prefix: str, uri: str) -> str:
    """Strip slashes and collapse empty segments; refuse '.'/'..' like keys do."""
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") or "\\" in p for p in parts):
        raise ConfigError(f"S3 prefix in {uri!r} must not contain '.', '..' or '\\' segments")
    return "/".join(parts)


def _scheme(ref: str) -> str | None:
    """The lower-cased URI scheme of `ref`, or None for a bare path (incl. "C:\\x")."""
    match = _SCHEME_RE.match(ref)
    return match.group(1).lower() if match else None


def _parse_s3(uri: str, error: type[SimsearchError]) -> tuple[str, str]:
    """`s3://bucket/rest` -> (bucket, rest); the rest is not normalized here."""
    rest = uri[len("s3://") :] if uri[:5].lower() == "s3://" else ""
    bucket, _, path = rest.partition("/")
    if not _BUCKET_RE.match(bucket):
        raise error(f"S3 URI {uri!r} must look like s3://bucket[/prefix]")
    return bucket, path


def _parse_file(uri: str, error: type[SimsearchError]) -> Path:
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
    scheme = _scheme(uri)
    if scheme is None:
        return FileStore(os.path.abspath(uri))
    if scheme == "s3":
        bucket, prefix = _parse_s3(uri, ConfigError)
        return S3Store(bucket, prefix, s3)
    if scheme == "file":
        return FileStore(_parse_file(uri, ConfigError))
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
    scheme = _scheme(uri)
    if scheme == "s3":
        bucket, key = _parse_s3(uri, InvalidParameter)
        if not key:
            raise InvalidParameter(f"object URI {uri!r} names a bucket but no key")
        return f"s3://{bucket}", _check_key(key)
    if scheme == "file":
        path = _parse_file(uri, InvalidParameter)
    elif scheme is None:
        path = Path(os.path.abspath(uri))
    else:
        raise InvalidParameter(f"unsupported object URI {uri!r}: use s3:// or file://")
    if uri.endswith("/") or path == path.parent:
        raise InvalidParameter(f"object URI {uri!r} names a directory, not an object")
    return path.parent.as_uri(), path.name
