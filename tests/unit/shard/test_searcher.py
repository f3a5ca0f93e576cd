"""The shard service in process: request checks, exact answers, items, info, concurrency.

Two shards (ordinals 0 and 1 of 2) are built over one real index; their candidates merged
must equal brute force on the exact ("IVF1,Flat") plan, and concurrent searches with
different nprobe on an IVF-PQ index must equal the same searches run one by one.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.errors import (
    InvalidParameter,
    InvalidVector,
    NotFound,
    PartitionsNotReady,
    VersionNotLoaded,
)
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import IndexParams, Manifest, ModelInfo
from simsearch.common.storage import FileStore
from simsearch.common.topk import Candidates, merge
from simsearch.common.wire import ShardCandidates, ShardSearchRequest, decode_array, encode_array
from simsearch.indexer.writer import write_index
from simsearch.router.routing import ShardView, choose_version
from simsearch.shard.app import build_service, create_app
from simsearch.shard.execute import execute
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.query import prepare
from simsearch.shard.service import ShardService
from simsearch.shard.settings import ShardSettings

P = 8
N = 2000
DIM = 32
K = 10


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


IDS = np.arange(N, dtype=np.int64) * 7919 + 11
VECTORS = unit(N, 0)
PATHS = [f"img/{i}.jpg" for i in range(N)]


def shard(root: Path, ordinal: int, replicas: int, cache: Path) -> ShardService:
    settings = ShardSettings(
        store=str(root), shard_ordinal=ordinal, replicas=replicas, cache_dir=cache
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    service.poller.poll_once()
    return service


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("store")
    layout = IndexLayout(FileStore(root))
    model = ModelInfo(name="test", dim=DIM)
    return root, write_index(layout, IDS, VECTORS, PATHS, model, partitions=P)


@pytest.fixture(scope="module")
def shards(
    index: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory
) -> list[ShardService]:
    root, _ = index
    return [shard(root, o, 2, tmp_path_factory.mktemp(f"cache{o}")) for o in (0, 1)]


def request(
    version: str, partitions: list[int], queries: np.ndarray, **extra: object
) -> ShardSearchRequest:
    fields: dict[str, object] = {
        "version": version,
        "partitions": partitions,
        "k": K,
        "dim": queries.shape[1],
        "nq": len(queries),
        "vectors_b64": encode_array(queries, "<f4"),
        **extra,
    }
    return ShardSearchRequest.model_validate(fields)


def candidates(answer: ShardCandidates) -> Candidates:
    shape = (answer.nq, answer.width)
    return Candidates(
        decode_array(answer.ids_b64, "<i8", shape),
        decode_array(answer.approx_b64, "<f4", shape),
        decode_array(answer.exact_b64, "<f4", shape),
    )


def search(service: ShardService, req: object) -> ShardCandidates:
    assert isinstance(req, ShardSearchRequest)
    return execute(prepare(req, service.holdings, service.settings), service.metrics)


def test_two_shards_merged_equal_brute_force(
    shards: list[ShardService], index: tuple[Path, Manifest]
) -> None:
    _, manifest = index
    held = [sorted(s.holdings.views()[0].ready) for s in shards]
    assert sorted(held[0] + held[1]) == list(range(P))
    queries = unit(20, 1)
    answers = [
        search(s, request(manifest.version, h, queries)) for s, h in zip(shards, held, strict=True)
    ]
    ids, scores = merge([candidates(a) for a in answers], K, K)
    truth = np.argsort(-(queries @ VECTORS.T), axis=1)[:, :K]
    assert np.array_equal(ids, IDS[truth])
    assert np.allclose(scores, np.take_along_axis(queries @ VECTORS.T, truth, 1), atol=1e-5)
    for answer in answers:  # every candidate carries its stored path
        got = candidates(answer).ids
        expected = [[PATHS[int((i - 11) // 7919)] for i in row] for row in got]
        assert answer.paths == expected


def test_request_checks_name_the_problem(
    shards: list[ShardService], index: tuple[Path, Manifest]
) -> None:
    _, manifest = index
    service = shards[0]
    mine = sorted(service.holdings.views()[0].ready)
    other = sorted(set(range(P)) - set(mine))
    q = unit(2, 2)
    cases: list[tuple[ShardSearchRequest, type[Exception], str]] = [
        (request("v20200101T000000Z-abcdef", mine, q), VersionNotLoaded, "not loaded"),
        (request(manifest.version, [*mine, other[0]], q), PartitionsNotReady, "not held"),
        (request(manifest.version, [P], q), InvalidParameter, "do not exist"),
        (request(manifest.version, mine, unit(2, 2)[:, :16]), InvalidVector, "dim is 16"),
        (request(manifest.version, mine, np.full((2, DIM), np.nan)), InvalidVector, "NaN"),
        (request(manifest.version, mine, q, refine=100, k=1000), InvalidParameter, "k·refine"),
    ]
    for req, error, words in cases:
        with pytest.raises(error, match=words):
            search(service, req)
    bad = request(manifest.version, mine, q).model_copy(update={"vectors_b64": "AAAA"})
    with pytest.raises(InvalidVector, match="bytes"):
        search(service, bad)


def test_empty_partition_list_answers_nothing(
    shards: list[ShardService], index: tuple[Path, Manifest]
) -> None:
    answer = search(shards[0], request(index[1].version, [], unit(3, 3)))
    assert (answer.nq, answer.width, answer.paths) == (3, 0, [[], [], []])


def test_items_by_id(shards: list[ShardService], index: tuple[Path, Manifest]) -> None:
    _, manifest = index
    row = 123
    owner = int(IDS[row] % P)
    holder = next(s for s in shards if owner in s.holdings.views()[0].ready)
    other = next(s for s in shards if s is not holder)
    item = holder.item(int(IDS[row]))
    assert (item.path, item.partition, item.version) == (PATHS[row], owner, manifest.version)
    assert np.allclose(decode_array(item.vector_b64, "<f4", (DIM,)), VECTORS[row])
    assert holder.item(int(IDS[row]), manifest.version).path == PATHS[row]
    with pytest.raises(PartitionsNotReady):
        other.item(int(IDS[row]))
    missing = int(IDS[row]) + P * 1000  # same partition, no such image
    with pytest.raises(NotFound):
        holder.item(missing)
    with pytest.raises(InvalidParameter):
        holder.item(-1)


def test_info_and_readiness(shards: list[ShardService], index: tuple[Path, Manifest]) -> None:
    info = shards[1].info()
    assert (info.ordinal, info.replicas, info.index, info.ready) == (1, 2, "default", True)
    (version,) = info.versions
    assert version.version == index[1].version
    assert (version.dim, version.model, version.nprobe, version.refine) == (DIM, "test", 1, 1)
    assert version.vectors == sum(index[1].partition_files[p].count for p in version.ready)
    assert info.rss_bytes > 10_000_000
    assert version.live  # CURRENT names it
    # the FAISS build is reported (fast-scan is ~15× slower without AVX2)
    assert info.faiss_options and isinstance(info.faiss_avx2, bool)
    assert version.recall_probe is None  # an exact-plan index has no probe
    ready, reason = shards[1].readiness()
    assert ready and f"{len(version.ready)}/{len(version.ready)} partitions ready" in reason


def test_not_ready_before_anything_is_published(tmp_path: Path) -> None:
    settings = ShardSettings(store=str(tmp_path / "empty"), shard_ordinal=0, cache_dir=tmp_path)
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    assert service.readiness() == (False, "waiting for the first poll of the index")
    service.poller.poll_once()
    ready, reason = service.readiness()
    assert not ready and "no published version" in reason


def test_not_ready_until_the_topology_file_appears(
    index: tuple[Path, Manifest], tmp_path: Path
) -> None:
    topology = tmp_path / "topology.json"
    settings = ShardSettings(
        store=str(index[0]),
        shard_ordinal=1,
        topology="file",
        topology_file=topology,
        cache_dir=tmp_path / "cache",
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    service.poller.poll_once()
    ready, reason = service.readiness()
    assert not ready and "topology.json: missing" in reason
    topology.write_text('{"replicas": 2}')
    service.poller.poll_once()
    assert service.readiness()[0] and service.info().replicas == 2


def test_concurrent_searches_with_different_nprobe_agree_with_serial(tmp_path: Path) -> None:
    layout = IndexLayout(FileStore(tmp_path / "store"))
    params = IndexParams(
        factory="IVF16,PQ8x4", nlist=16, pq_m=8, nbits=4, nprobe=2, refine=4, train_size=N
    )
    manifest = write_index(
        layout, IDS, VECTORS, PATHS, ModelInfo(name="t", dim=DIM), partitions=P, params=params
    )
    service = shard(tmp_path / "store", 0, 1, tmp_path / "cache")
    queries = unit(8, 4)
    reqs = [request(manifest.version, list(range(P)), queries, nprobe=n) for n in (1, 4, 16)] * 8
    serial = [search(service, r) for r in reqs]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda r: search(service, r), reqs))
    for one, other in zip(serial, parallel, strict=True):
        assert one.ids_b64 == other.ids_b64 and one.exact_b64 == other.exact_b64
    assert serial[0].ids_b64 != serial[2].ids_b64  # nprobe really changes the answer
    assert serial[0].width == K * 4  # the manifest's refine


# ------------------------------------------------------------------ /admin/reload


def test_reload_polls_now_and_follows_a_rollback(tmp_path: Path) -> None:
    """With poll_s an hour, `POST /admin/reload` is what makes the shard see a new CURRENT:
    first a publish, then a rollback, each answered after the poll that saw it."""
    layout = IndexLayout(FileStore(tmp_path / "store"))
    model = ModelInfo(name="test", dim=DIM)
    m1 = write_index(layout, IDS, VECTORS, PATHS, model, partitions=P)
    settings = ShardSettings(
        store=str(tmp_path / "store"),
        shard_ordinal=0,
        replicas=1,
        cache_dir=tmp_path / "cache",
        poll_s=3600,
        drain_s=3600,  # keep the version rolled back from held, as in a real rollback
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    app = create_app(settings, service)

    def live_choice() -> str | None:
        info = service.info()
        choice = choose_version([ShardView.of("s", info.versions)])
        return choice.version if choice is not None else None

    async def go() -> float:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://shard") as client:
                first = await client.post("/admin/reload")
                assert first.status_code == 200
                assert first.json() == {
                    "current": m1.version,
                    "versions": [m1.version],
                    "ready": True,
                    "error": None,
                }
                m2 = write_index(layout, IDS, VECTORS, PATHS, model, partitions=P, base=m1)
                assert service.holdings.live == m1.version  # the poller sleeps for an hour...
                second = await client.post("/admin/reload", params={"timeout_s": 60})
                assert second.status_code == 200  # ...unless woken
                assert second.json()["current"] == m2.version
                assert second.json()["versions"] == [m1.version, m2.version]
                assert live_choice() == m2.version

                assert layout.rollback() == m1.version
                third = (await client.post("/admin/reload")).json()
                assert third["current"] == m1.version and third["ready"]
                assert third["versions"] == [m1.version, m2.version]  # m2 drains later
                live = {v.version: v.live for v in service.info().versions}
                assert live == {m1.version: True, m2.version: False}
                assert live_choice() == m1.version  # the router follows CURRENT back
                served = (await client.get("/info")).json()["versions"]
                assert [v["live"] for v in served] == [True, False]

                bad = await client.post("/admin/reload", params={"timeout_s": 301})
                assert bad.status_code == 422
            started = time.monotonic()
        return time.monotonic() - started  # the lifespan's exit: stop() ends the long wait

    assert asyncio.run(go()) < 5


def test_reload_answers_202_when_the_poll_is_not_done_in_time(
    index: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """`timeout_s=0` only triggers the poll; a stopped shard does not wait at all."""
    settings = ShardSettings(
        store=str(index[0]), shard_ordinal=0, cache_dir=tmp_path / "cache", poll_s=3600
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    app = create_app(settings, service)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://shard") as client:
                pending = await client.post("/admin/reload", params={"timeout_s": 0})
                assert pending.status_code == 202
                assert set(pending.json()) == {"current", "versions", "ready", "error"}
                done = await client.post("/admin/reload")
                assert done.status_code == 200 and done.json()["current"] == index[1].version
        started = time.monotonic()
        finished, state = await service.reload(30)  # stopped: nobody will poll
        assert not finished and state.current == index[1].version
        assert time.monotonic() - started < 1

    asyncio.run(go())
