"""The one HTTP client the router talks to shards and the embedder with.

Created in the app's lifespan and shared by discovery, fan-out and the embedder call, so
connections are pooled and kept alive across queries (a query to 8 shards must not pay 8
TCP handshakes). Everything else in the router goes through `Upstream`, never through the
client library directly.

The library is aiohttp. httpx's AsyncClient was the first choice and was measured slow
(encode/httpx#3215): on this project's fan-out (one query, two shards, loopback) httpx
spent ~40 % of the router's CPU per query, part of it in httpcore re-trying to import
trio on every request to find the async library; the same fan-out over aiohttp took
5–6.6 ms against httpx's 8.6–10 ms at p50 (docs/benchmarks.md §4). Failure-injection
tests subclass `Upstream` and replace `_request`, the one method that touches the network.

A call that gets no HTTP answer raises `simsearch.common.errors.UpstreamFailure` (in the
one error tree, with `unreachable`/`timeout` saying how it failed); an HTTP answer, error
status or not, is a `Reply` for the caller to judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

from simsearch.common.errors import UpstreamFailure
from simsearch.common.telemetry import outgoing_headers
from simsearch.router.http1 import ConnectFailed, ExchangeFailed, Http1Pool, Target, target_of
from simsearch.router.settings import RouterSettings

__all__ = ["Reply", "Upstream", "make_session"]

_JSON = {"content-type": "application/json", "accept": "application/json"}


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body bytes and content type."""

    status: int
    body: bytes
    content_type: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def _error_body(self) -> dict[str, object]:
        """Our services' JSON error body, or {} when the answer is something else."""
        if not self.content_type.startswith("application/json"):
            return {}
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def detail(self) -> str:
        """The upstream's reason (the `detail` of our error bodies) or a short excerpt."""
        detail = self._error_body().get("detail")
        if detail is not None:
            return str(detail)
        return self.body[:300].decode("utf-8", "replace") or f"HTTP {self.status}"

    def error_code(self) -> str | None:
        """The upstream's error code (`error` of our error bodies), if it sent one."""
        code = self._error_body().get("error")
        return str(code) if code is not None else None


def make_session(settings: RouterSettings) -> aiohttp.ClientSession:
    """The pooled session: pool size and keep-alive from the settings, no proxies."""
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=0,
        keepalive_timeout=settings.keepalive_expiry_s,
        ttl_dns_cache=10,  # DNS discovery re-resolves; a pod that moved is found again
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.timeout_ms / 1000),
        trust_env=False,  # proxies from the environment must not sit between router and shard
        auto_decompress=False,
    )


class Upstream:
    """GET/POST with one timeout each, the request id forwarded, failures normalised."""

    def __init__(self, session: aiohttp.ClientSession | None, pool: Http1Pool | None = None):
        self.session = session
        self.pool = pool  # JSON POSTs to plain-http URLs go here (see `router.http1`)

    async def get(self, url: str, timeout_s: float, params: dict[str, str] | None = None) -> Reply:
        """GET `url`; raises `UpstreamFailure` when no HTTP answer arrives in time."""
        return await self._request("GET", url, timeout_s, params=params)

    async def post_json(
        self, url: str, body: bytes, timeout_s: float, headers: dict[str, str] | None = None
    ) -> Reply:
        """POST a JSON body (already serialised: pydantic's JSON is faster than json.dumps);
        `headers` add to the JSON ones (e.g. the admin key of a shard's /admin/reload)."""
        sent = {**_JSON, **headers} if headers else _JSON
        return await self._request("POST", url, timeout_s, data=body, headers=sent)

    async def post_file(
        self, url: str, field: str, data: bytes, timeout_s: float, params: dict[str, str]
    ) -> Reply:
        """POST one multipart file part (the embedder's /embed)."""
        form = aiohttp.FormData()
        form.add_field(field, data, filename="upload", content_type="application/octet-stream")
        return await self._request("POST", url, timeout_s, data=form, params=params)

    async def _request(
        self,
        method: str,
        url: str,
        timeout_s: float,
        *,
        data: bytes | aiohttp.FormData | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """The one network call; every failure becomes an `UpstreamFailure`."""
        if self.session is None:
            raise UpstreamFailure(url, "no HTTP session", unreachable=True, timeout=False)
        sent_headers = {**outgoing_headers(), **(headers or {})}
        target = target_of(url) if self.pool is not None and params is None else None
        if target is not None and method == "POST" and isinstance(data, bytes):
            return await self._post_lean(url, target, data, sent_headers, timeout_s)
        timeout = aiohttp.ClientTimeout(total=max(timeout_s, 0.001))
        try:
            async with self.session.request(
                method,
                url,
                data=data,
                params=params,
                headers=sent_headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return Reply(response.status, body, response.headers.get("content-type", ""))
        except TimeoutError as exc:
            reason = f"no answer within {timeout_s * 1000:.0f} ms"
            raise UpstreamFailure(url, reason, unreachable=False, timeout=True) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, unknown host, reset on connect
            reason = f"unreachable ({exc.os_error or type(exc).__name__})"
            raise UpstreamFailure(url, reason, unreachable=True, timeout=False) from exc
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a malformed URL
            reason = f"{type(exc).__name__}: {exc}"
            raise UpstreamFailure(url, reason, unreachable=False, timeout=False) from exc

    async def _post_lean(
        self, url: str, target: Target, data: bytes, headers: dict[str, str], timeout_s: float
    ) -> Reply:
        """`_request`'s POST over `router.http1`, failures mapped the same way."""
        assert self.pool is not None
        try:
            status, content_type, body = await self.pool.post(target, headers, data, timeout_s)
        except TimeoutError as exc:
            reason = f"no answer within {timeout_s * 1000:.0f} ms"
            raise UpstreamFailure(url, reason, unreachable=False, timeout=True) from exc
        except ConnectFailed as exc:
            raise UpstreamFailure(url, str(exc), unreachable=True, timeout=False) from exc
        except ExchangeFailed as exc:
            raise UpstreamFailure(url, str(exc), unreachable=False, timeout=False) from exc
        return Reply(status, body, content_type)
