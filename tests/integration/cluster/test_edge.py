"""The HTTP edge (common/edge.py) of a real service process, probed with raw sockets.

A router with no shards is the cheapest real service; the edge is the same for all three
(`simsearch serve` wires it in `cli._run`). Limits are shrunk so the test is quick.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.procs import Service, start_service
from tests.support.s3server import free_port

pytestmark = pytest.mark.integration

HEAD_LIMIT = 8192
HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    env = {
        "SIMSEARCH_SHARDS": f"http://127.0.0.1:{free_port()}",  # nobody: searches are 503
        "SIMSEARCH_HTTP_MAX_HEAD_BYTES": str(HEAD_LIMIT),
        "SIMSEARCH_HTTP_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "SIMSEARCH_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "SIMSEARCH_HTTP_LIMIT_CONCURRENCY": "400",
    }
    with start_service("router", env, ready_path="/health/live") as started:
        yield started


def _connect(service: Service) -> socket.socket:
    parts = urlsplit(service.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket timeout)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send until done or the server hung up (it may refuse before reading it all)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.mark.parametrize("size", [20 * 1024, 10 * 1024 * 1024], ids=["20KB", "10MB"])
def test_an_oversized_head_is_refused_with_431(service: Service, size: int) -> None:
    with _connect(service) as sock:
        _send_all(sock, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size)
        status, body = _status_and_body(_answer(sock))
    assert status == 431 and body["error"] == "headers_too_large"
    assert str(HEAD_LIMIT) in str(body["detail"])


def test_a_slow_head_is_cut_at_the_head_deadline(service: Service) -> None:
    started = time.monotonic()
    with _connect(service) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\n")
        for _ in range(20):  # a byte every 0.2 s: each byte would reset a keep-alive timer
            time.sleep(0.2)
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
        raw = _answer(sock)
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 3
    assert raw.startswith(b"HTTP/1.1 408")


def test_an_idle_new_connection_is_closed(service: Service) -> None:
    started = time.monotonic()
    with _connect(service) as sock:
        assert _answer(sock) == b""  # closed without a word
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 3


def test_a_trickled_body_is_cut_at_the_body_deadline(service: Service) -> None:
    started = time.monotonic()
    with _connect(service) as sock:
        head = b"POST /search/vector HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(head + b'Content-Length: 1000\r\n\r\n{"vector": [')
        _answer(sock)
    assert time.monotonic() - started < BODY_TIMEOUT_S + 3


def test_200_idle_connections_do_not_stop_the_service(service: Service) -> None:
    idle = [_connect(service) for _ in range(200)]
    try:
        with httpx.Client(timeout=5) as client:
            for _ in range(5):  # and keep-alive requests on one connection still work
                assert client.get(f"{service.url}/health/live").status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_vector_body_the_size_of_an_image_upload_is_refused_up_front(service: Service) -> None:
    big = b'{"vector": [' + b"0.123456789," * (5 * 1024 * 1024 // 12) + b"0.5]}"
    started = time.monotonic()
    response = httpx.post(
        f"{service.url}/search/vector",
        content=big,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert time.monotonic() - started < 3  # refused from Content-Length, not parsed


def test_four_largest_vector_bodies_at_once_do_not_stall_the_router(service: Service) -> None:
    """The probe's finding: four ~20 MB JSON bodies held the event loop for 11 s. Now the
    route's own limit (4 MiB) bounds what is parsed, and the loop keeps answering."""
    import concurrent.futures

    from simsearch.router.settings import RouterSettings

    limit = RouterSettings.model_fields["max_vector_body_bytes"].default
    numbers = b"0.123456789," * ((limit - 100) // 12)  # just under the route's body limit
    body = b'{"vector": [' + numbers + b"0.5]}"

    def post() -> int:
        return httpx.post(
            f"{service.url}/search/vector",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        posted = [pool.submit(post) for _ in range(4)]
        worst = 0.0
        with httpx.Client(timeout=10) as client:
            while not all(f.done() for f in posted):
                started = time.monotonic()
                assert client.get(f"{service.url}/health/live").status_code == 200
                worst = max(worst, time.monotonic() - started)
        statuses = [f.result() for f in posted]
    # parsed, not refused by size (413): a bad dim is 400, and this router has no shard (503)
    assert set(statuses) <= {400, 503}, statuses
    assert worst < 1.0, f"/health/live took {worst:.2f}s while the bodies were parsed"
