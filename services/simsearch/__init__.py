"""simsearch: a Kubernetes-native, sharded image similarity search cluster.

One package, one CLI (`simsearch`), one module per concept. Services (`embedder`,
`shard`, `router`, `indexer`) import the shared modules under `common/` and never
each other.
"""

__version__ = "0.1.0"
