"""simsearch: a Kubernetes-native, sharded image similarity search cluster.

One package, one CLI (`simsearch`), one module per concept. Service packages (`embedder`,
`shard`, `router`, `indexer`, `local`) import the shared packages (`common/`, and `models/`
for the code that embeds images) and never each other; the shared packages import no
service. `cli.py` alone wires services together. `tests/unit/test_imports.py` enforces this.
"""

__version__ = "0.1.0"
