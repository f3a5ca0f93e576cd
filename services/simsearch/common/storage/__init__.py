"""One object-store interface over S3 (AWS, MinIO, moto) and a local directory.

Every service reads images, weights and index shards through `ObjectStore`, so the same
code runs against a laptop directory (`file:///...`), a MinIO in the cluster, or AWS S3.
The store is addressed by a root URI (`s3://bucket/prefix`, `file:///abs/dir`) and every
object by a *key* relative to that root, always with "/" separators.

One module per concept, every public name re-exported here (import from
`simsearch.common.storage`, not from the modules):

* `base`   -- the `ObjectStore` interface, `ObjectInfo`, and `check_key`, the key rules
  both backends share;
* `atomic` -- local writes that readers never see half of (temp sibling, fsync, rename);
* `file`   -- `FileStore`, a directory;
* `s3`     -- `S3Store` and `S3Options`, with botocore's errors mapped to ours;
* `uri`    -- parsing store and object URIs, and `open_store`, which picks the backend.

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

from simsearch.common.storage.atomic import TEMP_SUFFIX, temp_sibling, write_atomically
from simsearch.common.storage.base import ObjectInfo, ObjectStore, check_key
from simsearch.common.storage.file import FileStore
from simsearch.common.storage.s3 import S3Options, S3Store, is_bucket_name, normalize_prefix
from simsearch.common.storage.uri import (
    is_uri,
    open_store,
    parse_file_uri,
    parse_s3_uri,
    split_object_uri,
    uri_scheme,
)

__all__ = [
    "TEMP_SUFFIX",
    "FileStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Options",
    "S3Store",
    "check_key",
    "is_bucket_name",
    "is_uri",
    "normalize_prefix",
    "open_store",
    "parse_file_uri",
    "parse_s3_uri",
    "split_object_uri",
    "temp_sibling",
    "uri_scheme",
    "write_atomically",
]
