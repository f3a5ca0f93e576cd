"""The router's lean HTTP/1.1 client against small real servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from simsearch.router.http1 import ConnectFailed, ExchangeFailed, Http1Pool, target_of
from tests.support.s3server import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    port = free_port()
    server = await asyncio.start_server(handler, "127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}/search"


def _run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


def test_keep_alive_reuses_one_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(OK)

    async def main() -> None:
        server, url = await _serve(handler)
        pool = Http1Pool(4, 30)
        target = target_of(url)
        assert target is not None
        for _ in range(3):
            assert await pool.post(target, {}, b"{}", 5) == (200, "application/json", b"{}")
        pool.close()
        server.close()

    _run(main())
    assert connections == 1


def test_a_connection_the_server_closed_is_retried_once_on_a_fresh_one() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(OK)  # says keep-alive (HTTP/1.1 default), then closes anyway
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(handler)
        pool = Http1Pool(4, 30)
        target = target_of(url)
        assert target is not None
        assert (await pool.post(target, {}, b"{}", 5))[0] == 200
        await asyncio.sleep(0)  # (not needed for correctness: the retry covers either order)
        assert (await pool.post(target, {}, b"{}", 5))[0] == 200
        pool.close()
        server.close()

    _run(main())
    assert len(seen) == 2


def test_refused_is_a_connect_failure() -> None:
    async def main() -> None:
        target = target_of(f"http://127.0.0.1:{free_port()}/search")
        assert target is not None
        with pytest.raises(ConnectFailed):
            await Http1Pool(4, 30).post(target, {}, b"{}", 5)

    _run(main())


def test_no_answer_times_out_and_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(10)

    async def main() -> None:
        server, url = await _serve(handler)
        pool = Http1Pool(4, 30)
        target = target_of(url)
        assert target is not None
        with pytest.raises(TimeoutError):
            await pool.post(target, {}, b"{}", 0.2)
        assert not pool._idle.get((target.host, target.port))
        pool.close()
        server.close()

    _run(main())


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'],
    ids=["malformed", "cut-mid-body"],
)
def test_a_broken_answer_is_an_exchange_failure(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(handler)
        target = target_of(url)
        assert target is not None
        with pytest.raises(ExchangeFailed):
            await Http1Pool(4, 30).post(target, {}, b"{}", 5)
        server.close()

    _run(main())


def test_headers_with_line_breaks_are_not_sent() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(OK)
        await writer.drain()

    async def main() -> None:
        server, url = await _serve(handler)
        target = target_of(url)
        assert target is not None
        headers = {"X-Request-ID": "abc\r\nX-Evil: 1", "X-Fine": "ok"}
        await Http1Pool(4, 30).post(target, headers, b"{}", 5)
        server.close()

    _run(main())
    assert b"X-Evil" not in seen[0] and b"X-Fine: ok" in seen[0]


def test_only_plain_http_urls_are_taken() -> None:
    assert target_of("https://shard:8443/search") is None
    target = target_of("http://shard-0.shards:8002/search?x=1")
    assert target is not None
    assert (target.host, target.port, target.path) == ("shard-0.shards", 8002, "/search?x=1")
