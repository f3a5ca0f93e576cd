"""The list-then-watch loop every Kubernetes adapter shares, and its small helpers.

The shard watches its StatefulSet (`shard/kube.py`, the replica count) and the router
watches the shard Service's EndpointSlices (`router/kube.py`, the shard list); both keep a
local copy fresh in a daemon thread with the same `Reflector`, so it lives here rather
than in either service (services never import each other):

    get/list ─► remember the objects and their resourceVersion ─► watch from that version
     ▲                                                              │ ends after
     │                                                              │ timeout_seconds: watch
     │                                                              │ again from the last
     │                                                              │ version seen
     └──────── 410 Gone (history compacted) ◄───────────────────────┘ connection errors:
                                                                       back off (0.2 s
                                                                       doubling to 5 s) and
                                                                       keep the last state

Objects are read as plain JSON (`read_json`) rather than the client's typed models: each
adapter needs a few fields, and the models reject shapes real API servers send (null
lists, new fields). Importing this module imports the Kubernetes client (~1 s), so the
services import their adapters lazily, only when told to use the API.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from simsearch.common.errors import ConfigError

__all__ = [
    "NAMESPACE_FILE",
    "REQUEST_TIMEOUT",
    "Backoff",
    "Reflector",
    "default_api_client",
    "default_namespace",
    "read_json",
]

log = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# (connect, read) seconds of a get or list: the API answers those at once or not at all.
REQUEST_TIMEOUT = (5.0, 15.0)
# A watch is silent while nothing changes; its read timeout is the watch's own timeout
# plus this grace, so a connection that died without a FIN is noticed, not waited on.
WATCH_READ_GRACE_S = 15.0
# " at 0x7f…" in an error's text would make every retry a new problem to log.
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def default_namespace() -> str:
    """The pod's own namespace (the service account's mount), else a ConfigError."""
    try:
        namespace = NAMESPACE_FILE.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(
            f"SIMSEARCH_NAMESPACE is not set and {NAMESPACE_FILE} is unreadable "
            f"({err.strerror or err}): set the namespace of the Kubernetes objects to watch"
        ) from err
    if not namespace:
        raise ConfigError(f"SIMSEARCH_NAMESPACE is not set and {NAMESPACE_FILE} is empty")
    return namespace


def default_api_client() -> Any:
    """A client for the pod's service account, else the local kubeconfig (development).

    Raised as a ConfigError at start-up: a process told to use the Kubernetes API that has
    no way to reach it could never become ready.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as in_cluster:
        try:
            config.load_kube_config(client_configuration=configuration, persist_config=False)
        except (config.ConfigException, OSError) as kubeconfig:
            raise ConfigError(
                f"no Kubernetes API to talk to: not in a pod ({in_cluster}) and no usable "
                f"kubeconfig ({kubeconfig})"
            ) from kubeconfig
    configuration.retries = 0  # the Reflector retries, with backoff and one log line
    return client.ApiClient(configuration)


def read_json(reply: Any) -> dict[str, Any]:
    """The JSON object of a `_preload_content=False` reply; its connection goes back."""
    try:
        data = json.loads(reply.data)
    finally:
        reply.release_conn()
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {str(data)[:80]!r}")
    return data


class Backoff:
    """Capped exponential delays with jitter, so many pods do not retry in lock-step."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._next = first_s

    def next(self) -> float:
        """The delay before the next try; each call doubles the one after, up to max_s."""
        delay = self._next
        self._next = min(self.max_s, delay * 2)
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        """After a success: the next failure is retried quickly again."""
        self._next = self.first_s


class Reflector(ABC):
    """Keeps a local copy of some Kubernetes objects fresh in a daemon thread.

    Subclasses say how to read the whole state (`_resync`, returning its resourceVersion),
    how to watch from a version (`_stream`) and what an event changes (`_apply`); this
    class runs the loop, handles 410 Gone, backs off on errors and logs each distinct
    problem once. State survives every failure: a shard or router that forgot what it
    knew because the API server restarted would reshuffle work for nothing.
    """

    namespace: str  # set by each subclass before the thread starts

    def __init__(self, what: str, api: Any | None, *, watch_timeout_s: int = 60) -> None:
        self.what = what
        self.watch_timeout_s = watch_timeout_s
        self._own_api = api is None
        self.api = default_api_client() if api is None else api
        self._stopping = threading.Event()
        self._first_try = threading.Event()  # set once the first read succeeded or failed
        self._watch: Any | None = None
        self._problem: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"kube {what}", daemon=True)

    @abstractmethod
    def _resync(self) -> str:
        """Read the whole state (get or list) and return its resourceVersion."""

    @abstractmethod
    def _stream(self, watcher: Any, version: str) -> Iterator[dict[str, Any]]:
        """`watcher.stream(...)` of the same objects from `version`."""

    @abstractmethod
    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        """Take one ADDED / MODIFIED / DELETED object (plain JSON) into the state."""

    def _watch_from(
        self, watcher: Any, list_call: Any, version: str, **selector: str
    ) -> Iterator[dict[str, Any]]:
        """One bounded watch of `list_call` from `version` (the timing every watch shares)."""
        events: Iterator[dict[str, Any]] = watcher.stream(
            list_call,
            self.namespace,
            resource_version=version,
            timeout_seconds=self.watch_timeout_s,
            allow_watch_bookmarks=True,
            _request_timeout=(REQUEST_TIMEOUT[0], self.watch_timeout_s + WATCH_READ_GRACE_S),
            **selector,
        )
        return events

    @property
    def problem(self) -> str | None:
        """Why the API could not be read last time, None while it can."""
        return self._problem

    def _begin(self) -> None:
        """Start the thread; subclasses call this last, once their state exists."""
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread (interrupting an open watch); idempotent."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            watcher = self._watch  # stopped again until it takes: a watch that was still
            if watcher is not None:  # connecting had no socket to shut the first time
                watcher.stop()
            self._thread.join(0.05)
        if self._own_api:
            self.api.close()

    def _run(self) -> None:
        backoff = Backoff()
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._resync()
                    self._first_try.set()
                    self._recovered()
                version = self._follow(version, backoff)
            except Exception as err:
                if self._stopping.is_set():
                    return  # close() cut the watch: not a problem worth a log line
                version = self._failed(err, version, backoff)

    def _failed(self, err: Exception, version: str | None, backoff: Backoff) -> str | None:
        """Log and wait out one failure; the version to watch from next (None: re-read)."""
        if isinstance(err, ApiException) and err.status == HTTPStatus.GONE:
            log.info("%s: watch expired (410 Gone); reading it again", self.what)
            self._stopping.wait(backoff.next())
            return None
        if isinstance(err, ApiException):
            self._trouble(f"HTTP {err.status} {err.reason}", backoff)
        elif isinstance(err, HTTPError | OSError):
            self._trouble(_ADDRESS_RE.sub("", f"{type(err).__name__}: {err}"), backoff)
        else:  # a bug or an odd object: keep the state, keep trying, with a traceback
            if self._problem != repr(err):
                log.error("%s: unexpected error", self.what, exc_info=err)
            self._trouble(repr(err), backoff, logged=True)
        return version

    def _follow(self, version: str, backoff: Backoff) -> str:
        """Watch from `version` until the server ends the watch; the last version seen."""
        watcher = watch.Watch(return_type="object")  # events as plain JSON objects
        self._watch = watcher
        started, events = time.monotonic(), 0
        try:
            if self._stopping.is_set():
                return version
            for event in self._stream(watcher, version):
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(str(event["type"]), event["raw_object"])
                events += 1
                backoff.reset()
                self._recovered()
                if self._stopping.is_set():
                    break
        finally:
            self._watch = None
        if events == 0 and time.monotonic() - started < 1.0:
            self._stopping.wait(backoff.next())  # a proxy ending watches at once: no spin
        else:
            self._recovered()
        return str(watcher.resource_version or version)

    def _trouble(self, reason: str, backoff: Backoff, *, logged: bool = False) -> None:
        if reason != self._problem and not logged:  # once per distinct problem
            log.warning("%s: %s; keeping what is known, retrying", self.what, reason)
        self._problem = reason
        self._first_try.set()
        self._stopping.wait(backoff.next())

    def _recovered(self) -> None:
        if self._problem is not None:
            log.info("%s: the API answers again", self.what)
            self._problem = None
