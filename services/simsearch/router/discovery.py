"""Which shard source the settings name (`SIMSEARCH_DISCOVERY`).

The one place that knows every source: the simple ones (`router/source.py`) and the
Kubernetes one (`router/kube.py`, imported only when chosen: its client takes ~1 s to
import). Nothing imports this module but the app's wiring and the tests, so the sources
and the registry (`router/registry.py`) stay free of each other and of the settings.
"""

from __future__ import annotations

from pathlib import Path

from simsearch.router.settings import RouterSettings
from simsearch.router.source import DnsSource, FileSource, ShardSource, StaticSource

__all__ = ["make_source"]


def make_source(settings: RouterSettings) -> ShardSource:
    """The source the settings name (validated there: the needed field is set)."""
    if settings.discovery == "file":
        return FileSource(Path(settings.shards_file or ""))
    if settings.discovery == "dns":
        return DnsSource(settings.shards_dns or "", settings.shard_port, settings.shard_scheme)
    if settings.discovery == "kubernetes":
        from simsearch.router.kube import KubernetesSource  # the client takes ~1 s to import

        service, port = settings.shards_service or "", settings.shard_port
        return KubernetesSource(service, settings.namespace, port, settings.shard_scheme)
    return StaticSource(settings.shard_urls())
