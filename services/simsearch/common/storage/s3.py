"""`S3Store`: objects in an S3 bucket (AWS, MinIO, moto), and how to reach it (`S3Options`).

botocore and boto3 failures never escape: `S3Store._errors` maps them to the domain's
exceptions with the endpoint and the object named (a missing key is `ObjectNotFound`, a
missing bucket a `StorageError`, since it is a deployment mistake rather than a 404).
Credentials are never passed in code: boto3 reads them from the environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, web identity, instance profile...), which
is how Kubernetes secrets and IRSA provide them.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from simsearch.common.storage.atomic import temp_sibling
from simsearch.common.storage.base import ObjectInfo, ObjectStore, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Options", "S3Store", "is_bucket_name", "normalize_prefix"]

_MIB = 1024 * 1024
# Files bigger than this go through S3 multipart upload: parts are retried one by one and
# uploaded in parallel, so a large index shard does not restart from zero on a hiccup.
_MULTIPART_THRESHOLD = 8 * _MIB
_MULTIPART_CHUNKSIZE = 8 * _MIB
_TRANSFER_CONCURRENCY = 8
# SigV4 presigned URLs are valid for at most seven days.
_MAX_PRESIGN_S = 7 * 24 * 3600
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


def is_bucket_name(bucket: str) -> bool:
    """Whether `bucket` is a plausible S3 bucket name (the server has the final word)."""
    return _BUCKET_RE.match(bucket) is not None


def normalize_prefix(prefix: str, uri: str) -> str:
    """Strip slashes and collapse empty segments; refuse '.'/'..' like keys do."""
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") or "\\" in p for p in parts):
        raise ConfigError(f"S3 prefix in {uri!r} must not contain '.', '..' or '\\' segments")
    return "/".join(parts)


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
        if not is_bucket_name(bucket):
            raise ConfigError(f"invalid S3 bucket name {bucket!r}")
        self._bucket = bucket
        self._prefix = normalize_prefix(prefix, f"s3://{bucket}/{prefix}")
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
        check_key(key)
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
        tmp = temp_sibling(dest)
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
        check_key(prefix, prefix=True)
        root = f"{self._prefix}/" if self._prefix else ""
        target = f"{self.uri.rstrip('/')}/{prefix}"
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("list", target):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=root + prefix):
                for obj in page.get("Contents", []):
                    key = obj.get("Key", "")[len(root) :]
                    if key and not key.endswith("/"):  # skip console "folder" markers
                        modified = obj.get("LastModified")
                        mtime = modified.astimezone(UTC) if modified is not None else None
                        yield ObjectInfo(key, int(obj.get("Size", 0)), mtime)

    def tags(self, key: str) -> dict[str, str]:
        """GetObjectTagging: the object's tags (the indexer's `--metadata-tags`)."""
        target = self.url_for(key)
        with self._errors("get tags of", target):
            resp = self._client.get_object_tagging(Bucket=self._bucket, Key=self._key(key))
        return {tag["Key"]: tag["Value"] for tag in resp.get("TagSet", [])}

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
