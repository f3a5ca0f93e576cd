"""What the shard reports about itself: readiness, `/info`, the reload answer, the FAISS build.

All of it is read from the collections' holdings and from what the poller's last poll
found; nothing here changes state, so any request may call it from the event loop.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faiss

import simsearch
from simsearch.common.wire import ShardInfo, ShardReload, ShardVersionInfo
from simsearch.shard.collections import Collection
from simsearch.shard.drift import version_drift
from simsearch.shard.settings import ShardSettings
from simsearch.shard.versions import Holdings, VersionView

if TYPE_CHECKING:  # the poller calls `readiness` at the end of each tick
    from simsearch.shard.poller import Poller

FAISS_OPTIONS = str(faiss.get_compile_options()).strip()
# without AVX2, fast-scan and PQ scans fall back to generic code, an order slower
FAISS_AVX2 = "AVX2" in FAISS_OPTIONS.split() or "AVX512" in FAISS_OPTIONS.split()


def readiness(collections: Sequence[Collection], error: str | None) -> tuple[bool, str]:
    """Ready once every polled collection with a live version serves it (see below);
    the reason names each collection, and the one that holds readiness back.

    Per collection the rule is `holdings_readiness`'s. A collection without a live
    version (nothing published, or its manifest unreadable) does not count, unless no
    collection has one: then the shard is not ready and says why (`error`). Nor does one
    that appeared while the shard was already serving (`Collection.late`): it loads in
    the background, and the router routes its queries once `/info` shows it ready. One
    not polled yet holds readiness back, so that a first tick halfway through its
    collections does not count as done.
    """
    live = [c for c in collections if c.holdings.live is not None]
    if not live:
        return False, error or "waiting for the first poll of the index"
    for c in collections:
        if not c.polled and not c.late:
            return False, f"{c.name}: waiting for its first poll"
    states = [(c, *holdings_readiness(c.holdings, c.last_error)) for c in live]
    for c, ok, why in states:
        if not ok and not c.late:
            return False, f"{c.name}: {why}"
    return True, "; ".join(f"{c.name}: {why}" for c, _ok, why in states)


def holdings_readiness(holdings: Holdings, last_error: str | None) -> tuple[bool, str]:
    """One collection is ready once a version has been through a full load pass and
    serves something.

    A partition that failed does not hold readiness back: the router plans from
    `/info`, so the healthy partitions stay useful while the failed one is retried.
    """
    views = holdings.views()
    serving = [v for v in views if v.settled and (v.ready or not v.assigned)]
    if serving:
        view = serving[-1]
        failed = f", {len(view.failed)} failed" if view.failed else ""
        return True, (
            f"serving {view.version}: {len(view.ready)}/{len(view.assigned)} partitions "
            f"ready{failed}"
        )
    if last_error:
        return False, last_error
    if views:
        view = views[-1]
        return False, (
            f"loading {view.version}: {len(view.ready)}/{len(view.assigned)} partitions ready"
        )
    return False, "waiting for the first poll of the index"


def reload_answer(poller: Poller) -> ShardReload:
    """The default collection's live version and versions held, readiness, and the
    poll's error: what a reload answers (every collection was polled)."""
    holdings = poller.collections.default().holdings
    error = poller.error()
    return ShardReload(
        current=holdings.live,
        versions=[view.version for view in holdings.views()],
        ready=readiness(poller.collections.all(), error)[0],
        error=error,
    )


def shard_info(poller: Poller, settings: ShardSettings) -> ShardInfo:
    """What the router plans from: every collection's versions and the partitions ready
    in each, each version tagged with its collection."""
    collections = poller.collections.all()
    error = poller.error()
    return ShardInfo(
        ordinal=settings.ordinal,
        replicas=poller.replicas_seen,
        index=settings.index,
        ready=readiness(collections, error)[0],
        versions=[
            version_info(view, settings, c.holdings.live, c.name)
            for c in collections
            for view in c.holdings.views()
        ],
        collections=[c.name for c in collections],
        rss_bytes=rss_bytes(),
        version=simsearch.__version__,
        faiss_options=FAISS_OPTIONS,
        faiss_avx2=FAISS_AVX2,
        error=error,
    )


def version_info(
    view: VersionView, settings: ShardSettings, live: str | None, collection: str
) -> ShardVersionInfo:
    """One held version as `/info` lists it (effective nprobe/refine: the settings' win;
    the drift figures of `shard.drift`)."""
    manifest = view.manifest
    drift = version_drift(view)
    return ShardVersionInfo(
        version=view.version,
        collection=collection,
        partitions=manifest.partitions,
        ready=sorted(view.ready),
        loading=sorted(view.loading),
        failed=view.failed,
        dim=manifest.model.dim,
        nprobe=settings.nprobe or manifest.params.nprobe,
        refine=settings.refine or manifest.params.refine,
        vectors=sum(served.info.count for served in view.ready.values()),
        model=manifest.model.name,
        live=view.version == live,
        recall_probe=manifest.probe.recall if manifest.probe else None,
        probe_queries=manifest.probe.queries if manifest.probe else None,
        scoring_dim=manifest.params.pca_dim,
        metadata=manifest.metadata,
        centroid_distance_live=drift.live,
        centroid_distance_indexed=drift.indexed,
        drift_ratio=drift.ratio,
        drift_queries=drift.queries,
    )


def rss_bytes() -> int:
    """Resident memory of this process (mapped index pages the kernel keeps count too)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, in KiB
