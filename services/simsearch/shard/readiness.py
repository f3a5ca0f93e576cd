"""What the shard reports about itself: readiness, `/info`, the reload answer, the FAISS build.

All of it is read from the holdings and from what the poller's last poll found; nothing
here changes state, so any request may call it from the event loop.
"""

from __future__ import annotations

import os
import resource

import faiss

import simsearch
from simsearch.common.wire import ShardInfo, ShardReload, ShardVersionInfo
from simsearch.shard.poller import Poller
from simsearch.shard.settings import ShardSettings
from simsearch.shard.versions import Holdings, VersionView

FAISS_OPTIONS = str(faiss.get_compile_options()).strip()
# without AVX2, fast-scan and PQ scans fall back to generic code, an order slower
FAISS_AVX2 = "AVX2" in FAISS_OPTIONS.split() or "AVX512" in FAISS_OPTIONS.split()


def readiness(holdings: Holdings, last_error: str | None) -> tuple[bool, str]:
    """Ready once a version has been through a full load pass and serves something.

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
    """The live version, the versions held and readiness: what a reload answers."""
    holdings = poller.holdings
    return ShardReload(
        current=holdings.live,
        versions=[view.version for view in holdings.views()],
        ready=readiness(holdings, poller.last_error)[0],
        error=poller.last_error,
    )


def shard_info(poller: Poller, settings: ShardSettings) -> ShardInfo:
    """What the router plans from: versions and the partitions ready in each."""
    holdings = poller.holdings
    return ShardInfo(
        ordinal=settings.ordinal,
        replicas=poller.replicas_seen,
        index=poller.layout.name,
        ready=readiness(holdings, poller.last_error)[0],
        versions=[version_info(view, settings, holdings.live) for view in holdings.views()],
        rss_bytes=rss_bytes(),
        version=simsearch.__version__,
        faiss_options=FAISS_OPTIONS,
        faiss_avx2=FAISS_AVX2,
        error=poller.last_error,
    )


def version_info(view: VersionView, settings: ShardSettings, live: str | None) -> ShardVersionInfo:
    """One held version as `/info` lists it (effective nprobe/refine: the settings' win)."""
    manifest = view.manifest
    return ShardVersionInfo(
        version=view.version,
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
    )


def rss_bytes() -> int:
    """Resident memory of this process (mapped index pages the kernel keeps count too)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, in KiB
