"""The one HTTP client the router talks to shards and the embedder with.

Created in the app's lifespan and shared by discovery, fan-out and the embedder call, so
connections are pooled and kept alive across queries (a query to 8 shards must not pay 8
TCP handshakes). Everything else in the router goes through `Upstream`, not through
httpx directly: httpx's AsyncClient is reported slow under high concurrency
(encode/httpx#3215, the httpcore pool), and keeping it behind this seam means another
transport (aiohttp, or httpx over a different pool) can replace it in one file once the
benchmarks say so. Tests pass an `httpx.MockTransport` here only to inject failures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from simsearch.common.telemetry import outgoing_headers
from simsearch.router.settings import RouterSettings

__all__ = ["Reply", "Upstream", "UpstreamFailure", "make_client"]

_JSON = {"content-type": "application/json", "accept": "application/json"}


class UpstreamFailure(Exception):
    """A call to another service did not produce an HTTP answer (refused, timed out...).

    `unreachable` is True only when no connection could be made (refused, unknown host):
    such a shard is marked down at once instead of waiting for the next poll to notice. A
    connection that breaks mid-answer is a failure of that call only (it may be a stale
    keep-alive connection the server had just closed), retried elsewhere like an error.
    """

    def __init__(self, url: str, reason: str, *, unreachable: bool, timeout: bool) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.unreachable = unreachable
        self.timeout = timeout


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


def make_client(
    settings: RouterSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The pooled client: limits and keep-alive from the settings, no redirects."""
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry_s,
    )
    return httpx.AsyncClient(
        limits=limits,
        timeout=httpx.Timeout(settings.timeout_ms / 1000),
        transport=transport,
        follow_redirects=False,
        trust_env=False,  # proxies from the environment must not sit between router and shard
    )


class Upstream:
    """GET/POST with one timeout each, the request id forwarded, failures normalised."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, url: str, timeout_s: float, params: dict[str, str] | None = None) -> Reply:
        """GET `url`; raises `UpstreamFailure` when no HTTP answer arrives in time."""
        return await self._send("GET", url, timeout_s, params=params)

    async def post_json(self, url: str, body: bytes, timeout_s: float) -> Reply:
        """POST a JSON body (already serialised: pydantic's JSON is faster than json.dumps)."""
        return await self._send("POST", url, timeout_s, content=body, headers=_JSON)

    async def post_file(
        self, url: str, field: str, data: bytes, timeout_s: float, params: dict[str, str]
    ) -> Reply:
        """POST one multipart file part (the embedder's /embed)."""
        files = {field: ("upload", data, "application/octet-stream")}
        return await self._send("POST", url, timeout_s, files=files, params=params)

    async def _send(
        self,
        method: str,
        url: str,
        timeout_s: float,
        *,
        content: bytes | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent_headers = {**outgoing_headers(), **(headers or {})}
        try:
            response = await self.client.request(
                method,
                url,
                content=content,
                files=files,
                params=params,
                headers=sent_headers,
                timeout=httpx.Timeout(max(timeout_s, 0.001)),
            )
        except httpx.TimeoutException as exc:
            reason = f"no answer within {timeout_s * 1000:.0f} ms"
            raise UpstreamFailure(url, reason, unreachable=False, timeout=True) from exc
        except httpx.ConnectError as exc:  # refused, reset while connecting, unknown host
            reason = f"unreachable ({exc or type(exc).__name__})"
            raise UpstreamFailure(url, reason, unreachable=True, timeout=False) from exc
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise UpstreamFailure(url, reason, unreachable=False, timeout=False) from exc
        content_type = response.headers.get("content-type", "")
        return Reply(response.status_code, response.content, content_type)
