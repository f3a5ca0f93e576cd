"""A small fake Kubernetes API server for the shard's and router's Kubernetes adapters.

It speaks the wire shapes of exactly the calls simsearch makes, over real HTTP (the
official client talks to it unchanged), and nothing else:

    GET /apis/apps/v1/namespaces/{ns}/statefulsets/{name}                 get
    GET /apis/apps/v1/namespaces/{ns}/statefulsets?watch=true
        &fieldSelector=metadata.name={name}&resourceVersion=…             watch one
    GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices
        ?labelSelector=kubernetes.io/service-name={svc}[&watch=true&…]    list / watch

Like RBAC with `resourceNames`, a list of statefulsets or a watch of them without the
name selector is refused (403); any other path is a 404. Every object change is kept in
an event history with a global resourceVersion, and a watch from version V replays what
came after V, as etcd does, before streaming new events (chunked newline-delimited JSON,
ended after `timeoutSeconds`). Controls for failure tests: `expire_next_watch` (410 as
an HTTP status or as an ERROR event), `drop_watches` (connections cut mid-stream) and
`refuse` (503 or a closed connection for everything). `calls` records every request.
"""

from __future__ import annotations

import contextlib
import copy
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from kubernetes import client

STS = "/apis/apps/v1/namespaces/{ns}/statefulsets"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Call:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]

    @property
    def watching(self) -> bool:
        """A watch request (the Python client sends `watch=True`, Go parses it as a bool)."""
        return self.query.get("watch", "").lower() in ("true", "1")


@dataclass(frozen=True)
class Endpoint:
    """One pod behind a Service, as an EndpointSlice lists it."""

    ip: str
    pod: str | None
    ready: bool = True
    terminating: bool = False

    def to_json(self, namespace: str) -> dict[str, Any]:
        found: dict[str, Any] = {
            "addresses": [self.ip] if self.ip else [],
            "conditions": {
                "ready": self.ready and not self.terminating,
                "serving": self.ready,
                "terminating": self.terminating,
            },
        }
        if self.pod is not None:
            found["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": self.pod}
        return found


@dataclass
class _Event:
    version: int
    resource: str  # "statefulsets" or "endpointslices"
    kind: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A `metav1.Status`, the body of every API error and of watch ERROR events."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKubeApi:
    """The fake server's state and controls; `with FakeKubeApi() as api:` serves it."""

    def __init__(self, namespace: str = "search") -> None:
        self.namespace = namespace
        self._cond = threading.Condition()
        self._version = 100
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: list[_Event] = []
        self._calls: list[Call] = []
        self._expire: list[Literal["http", "event"]] = []
        self._refusing: Literal["503", "close"] | None = None
        self._epoch = 0  # drop_watches() bumps it: open streams with an older one are cut
        self._closed = False
        self.open_watches = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ---- lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def client(self) -> Any:
        """An `ApiClient` for this server, as a test passes it to the adapters."""
        return client.ApiClient(client.Configuration(host=self.url))

    # ---- state

    def set_statefulset(self, name: str, replicas: int) -> None:
        """Create or scale a StatefulSet (an ADDED or MODIFIED event to watchers)."""
        labels = {"app.kubernetes.io/component": "shard"}
        self._put(
            "statefulsets",
            name,
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "serviceName": name,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
                },
                "status": {"replicas": replicas},
            },
        )

    def set_endpoints(
        self,
        slice_name: str,
        service: str,
        endpoints: list[Endpoint],
        *,
        port: int | None = 8002,
        address_type: str = "IPv4",
    ) -> None:
        """Create or replace one EndpointSlice of `service` (port None: no `http` port)."""
        ports = [{"name": "http", "port": port, "protocol": "TCP"}] if port else []
        labels = {
            SERVICE_LABEL: service,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        }
        self._put(
            "endpointslices",
            slice_name,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": self.namespace, "labels": labels},
                "addressType": address_type,
                # a slice without endpoints is sent as null, as the Go API server does
                "endpoints": [e.to_json(self.namespace) for e in endpoints] or None,
                "ports": ports,
            },
        )

    def delete(self, resource: str, name: str) -> None:
        """Delete an object (a DELETED event to watchers)."""
        with self._cond:
            obj = self._objects.pop((resource, name))
            self._record(resource, "DELETED", obj)

    def _put(self, resource: str, name: str, obj: dict[str, Any]) -> None:
        with self._cond:
            kind = "MODIFIED" if (resource, name) in self._objects else "ADDED"
            self._objects[(resource, name)] = obj
            self._record(resource, kind, obj)

    def _record(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        """Stamp a new resourceVersion and wake the watches (under the lock)."""
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._history.append(_Event(self._version, resource, kind, copy.deepcopy(obj)))
        self._cond.notify_all()

    # ---- failure controls

    def expire_next_watch(self, how: Literal["http", "event"] = "http") -> None:
        """The next watch is answered 410 Gone: an HTTP 410, or a 200 with an ERROR event."""
        with self._cond:
            self._expire.append(how)

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no terminating chunk)."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def refuse(self, how: Literal["503", "close"] | None = "503") -> None:
        """Answer everything with 503, or close the connection unanswered; None: serve."""
        with self._cond:
            self._refusing = how
            self._epoch += 1  # an API server that goes away takes its watches with it
            self._cond.notify_all()

    # ---- observation

    @property
    def calls(self) -> list[Call]:
        with self._cond:
            return list(self._calls)

    def count(self, path: str, watch: bool | None = None, **query: str) -> int:
        """Requests to `path` (watches or not, if said) with (at least) these parameters."""
        return sum(
            1
            for c in self.calls
            if c.path == path and watch in (None, c.watching) and query.items() <= c.query.items()
        )

    # ---- serving (called from handler threads)

    def note(self, call: Call) -> Literal["503", "close"] | None:
        """Record a request; how it must be refused, if the server is refusing."""
        with self._cond:
            self._calls.append(call)
            return self._refusing

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            obj = self._objects.get((resource, name))
            return copy.deepcopy(obj) if obj else None

    def listing(self, resource: str, match: dict[str, str]) -> dict[str, Any]:
        with self._cond:
            items = [
                copy.deepcopy(o)
                for (r, _), o in sorted(self._objects.items())
                if r == resource and _matches(o, match)
            ]
            return {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": str(self._version)},
                "items": items,
            }

    @contextlib.contextmanager
    def watch_open(self) -> Iterator[None]:
        """Count a watch as open while its stream is being served."""
        with self._cond:
            self.open_watches += 1
        try:
            yield
        finally:
            with self._cond:
                self.open_watches -= 1

    def take_expiry(self) -> Literal["http", "event"] | None:
        with self._cond:
            return self._expire.pop(0) if self._expire else None

    def events(
        self,
        resource: str,
        match: dict[str, str],
        since: int,
        timeout_s: float,
        client_gone: Callable[[], bool],
    ) -> Iterator[dict[str, Any] | None]:
        """Watch events after `since`, then new ones until the timeout; a None means the
        connection must be cut (dropped, refusing, the server closing, the client gone)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            epoch, cursor = self._epoch, self._first_after(since)
        while True:
            with self._cond:

                def changed(seen: int = cursor) -> bool:
                    return len(self._history) > seen or self._epoch != epoch or self._closed

                self._cond.wait_for(
                    changed, timeout=max(0.0, min(0.1, deadline - time.monotonic()))
                )
                if self._epoch != epoch or self._closed:
                    yield None
                    return
                pending, cursor = self._history[cursor:], len(self._history)
            for event in pending:
                if event.resource == resource and _matches(event.obj, match):
                    yield {"type": event.kind, "object": event.obj}
            if time.monotonic() >= deadline:
                return
            if client_gone():  # the API server notices a closed watch; so does the fake
                yield None
                return

    def _first_after(self, since: int) -> int:
        """Index in the history of the first event newer than `since` (under the lock)."""
        for index, event in enumerate(self._history):
            if event.version > since:
                return index
        return len(self._history)


def _matches(obj: dict[str, Any], match: dict[str, str]) -> bool:
    """`metadata.name` against a field selector, anything else against labels."""
    for key, value in match.items():
        if key == "metadata.name":
            if obj["metadata"]["name"] != value:
                return False
        elif obj["metadata"].get("labels", {}).get(key) != value:
            return False
    return True


def _selector(text: str | None) -> dict[str, str] | None:
    """`a=b,c=d` as a dict; None when a term is not an equality."""
    if not text:
        return {}
    found = {}
    for term in text.split(","):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!"):
            return None
        found[key.strip()] = value.lstrip("=").strip()
    return found


def _handler_for(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = api

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked watch streams, keep-alive like the real one
    fake: FakeKubeApi

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        call = Call(method, parts.path, dict(parse_qsl(parts.query)))
        refusing = self.fake.note(call)
        if refusing == "close":
            self._cut()
        elif refusing == "503":
            self._send(503, status(503, "ServiceUnavailable", "the fake API is refusing"))
        elif method != "GET":
            self._send(405, status(405, "MethodNotAllowed", f"{method} is not served here"))
        else:
            self._route(call)

    def _route(self, call: Call) -> None:
        ns, path, query, watching = self.fake.namespace, call.path, call.query, call.watching
        name = path.removeprefix(STS.format(ns=ns) + "/")
        if name != path and "/" not in name and not watching:
            self._get_statefulset(name)
        elif path == STS.format(ns=ns):
            fields = _selector(query.get("fieldSelector"))
            if not watching or not fields or set(fields) != {"metadata.name"}:
                self._send(403, status(403, "Forbidden", "list/watch without resourceNames"))
            else:
                self._watch("statefulsets", fields, query)
        elif path == SLICES.format(ns=ns):
            labels = _selector(query.get("labelSelector"))
            if labels is None or query.get("fieldSelector"):
                self._send(400, status(400, "BadRequest", "unsupported selector"))
            elif watching:
                self._watch("endpointslices", labels, query)
            else:
                self._send(200, self.fake.listing("endpointslices", labels))
        else:
            self._send(404, status(404, "NotFound", f"{path} is not served by the fake"))

    def _get_statefulset(self, name: str) -> None:
        obj = self.fake.get("statefulsets", name)
        if obj is None:
            self._send(404, status(404, "NotFound", f'statefulsets "{name}" not found'))
        else:
            self._send(200, obj)

    def _watch(self, resource: str, match: dict[str, str], query: dict[str, str]) -> None:
        expiry = self.fake.take_expiry()
        gone = status(410, "Expired", "too old resource version")
        if expiry == "http":
            self._send(410, gone)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if expiry == "event":
            self._chunk({"type": "ERROR", "object": gone})
            self._chunk(None)
            return
        since = int(query.get("resourceVersion") or 0)
        timeout_s = float(query.get("timeoutSeconds") or 1800)
        try:
            with self.fake.watch_open():
                events = self.fake.events(resource, match, since, timeout_s, self._client_gone)
                for event in events:
                    if event is None:
                        self._cut()
                        return
                    self._chunk(event)
                self._chunk(None)
        except OSError:  # the client went away
            self.close_connection = True

    def _chunk(self, event: dict[str, Any] | None) -> None:
        """One watch event as an HTTP chunk; None ends the stream properly."""
        if event is None:
            self.wfile.write(b"0\r\n\r\n")
        else:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """The client closed its end (a watch request sends nothing more until then)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _cut(self) -> None:
        """Drop the connection without a word: what a dying API server or proxy does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
