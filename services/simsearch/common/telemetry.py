"""Observability shared by every service: JSON logs, a request id, Prometheus metrics.

The request id is taken from the `X-Request-ID` header (or made up) by the HTTP
middleware, kept in a context variable, written into every log line, copied onto
outgoing calls (`outgoing_headers`) and onto work handed to threads (`run_in_context`),
so one query can be followed through router, embedder and shards with one grep.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

P = ParamSpec("P")
R = TypeVar("R")

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def new_request_id() -> str:
    """A fresh id for a request that arrived without one."""
    return uuid.uuid4().hex[:16]


def current_request_id() -> str:
    """The request id of the code that is running now ('-' outside a request)."""
    return request_id_var.get()


def outgoing_headers() -> dict[str, str]:
    """Headers to put on a call to another service so the request id follows the query."""
    return {REQUEST_ID_HEADER: current_request_id()}


def run_in_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap `fn` so that, run in a worker thread, it still sees this request's id.

    `loop.run_in_executor` does not copy context variables; this does. Each call runs in
    its own copy, because one Context cannot be entered by two threads at once.
    """
    ctx = contextvars.copy_context()

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return call


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": current_request_id(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Send all logs (ours, uvicorn's) to stderr in one format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware writes one access line per request with its id; uvicorn's is a duplicate.
    logging.getLogger("uvicorn.access").disabled = True


class _RequestIdFilter(logging.Filter):
    """Adds `request_id` to records for the plain-text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class HttpMetrics:
    """Request counters and latency histograms, in a registry owned by one app.

    Each app gets its own registry so that several apps in one process (tests) never
    collide on metric names.
    """

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        # process_resident_memory_bytes & co: the dashboards chart memory against limits
        ProcessCollector(registry=registry)
        self.requests = Counter(
            "simsearch_http_requests",
            "HTTP requests by route, method and status code.",
            ["service", "route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "simsearch_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["service", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.service = service

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(self.service, route, method, str(status)).inc()
        self.latency.labels(self.service, route).observe(seconds)
