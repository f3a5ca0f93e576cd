"""API keys with scopes (search, admin), from settings and from a key file re-read on change.

Shared by the router (search and admin routes) and the shards (`/admin/reload`), which
read the same Secret. Keys come from three places, merged:

- `SIMSEARCH_API_KEYS`: comma-separated search keys (the router's setting);
- `SIMSEARCH_ADMIN_KEYS`: comma-separated admin keys (an admin key may also search);
- `SIMSEARCH_API_KEYS_FILE`: a file with one `scope:key` per line (`search:…`, `admin:…`;
  blank lines and `#` comments ignored), re-read when it changes so keys rotate without a
  restart. Kubernetes updates a Secret volume by swapping a `..data` symlink to a new
  folder; `os.stat` follows the links, so the swap shows as a new inode.

Setting any of the three turns keys on. A key file that is configured but holds no keys
lets nobody in (fail closed): emptying the file by mistake must not open the cluster.
Keys are compared in constant time against every configured key (`hmac.compare_digest`,
no early exit), so the time of a refusal says nothing about how close a guess was.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from simsearch.common.errors import ConfigError, Forbidden, Unauthorized
from simsearch.common.settings import ServiceSettings

__all__ = [
    "KeyRing",
    "KeySettings",
    "KeySource",
    "Scope",
    "authorize",
    "parse_key_file",
    "parse_key_list",
    "presented_key",
]

log = logging.getLogger(__name__)

Scope = Literal["search", "admin"]
SCOPES: tuple[Scope, ...] = ("search", "admin")
# How often the key file's stat is compared with the last one read (at most, on demand).
CHECK_EVERY_S = 1.0


def check_key(key: str) -> str:
    """A key is printable ASCII without spaces or commas (it travels in an HTTP header)."""
    if not key or any(not ("!" <= ch <= "~") or ch == "," for ch in key):
        raise ValueError(
            "API keys must be printable ASCII without spaces or commas (got a key of "
            f"{len(key)} characters that is not)"
        )
    return key


def parse_key_list(text: str) -> list[str]:
    """Comma-separated keys, stripped, empty entries dropped, each checked."""
    return [check_key(k.strip()) for k in text.split(",") if k.strip()]


@dataclass(frozen=True)
class KeyRing:
    """The accepted keys and their scopes (admin wins when a key is listed as both)."""

    entries: tuple[tuple[bytes, Scope], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, Scope]]) -> KeyRing:
        scopes: dict[str, Scope] = {}
        for key, scope in pairs:
            scopes[key] = "admin" if "admin" in (scope, scopes.get(key)) else "search"
        return cls(tuple((key.encode(), scope) for key, scope in sorted(scopes.items())))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def merged(self, other: KeyRing) -> KeyRing:
        """Both rings' keys (the wider scope where they overlap)."""
        pairs = [(k.decode(), s) for k, s in (*self.entries, *other.entries)]
        return KeyRing.of(pairs)

    def scope_of(self, given: str) -> Scope | None:
        """The scope of `given`, or None; every key is compared, in constant time each."""
        candidate = given.encode("utf-8", "replace")
        found: Scope | None = None
        for key, scope in self.entries:
            if hmac.compare_digest(candidate, key) and found != "admin":
                found = scope
        return found


def parse_key_file(text: str, where: str) -> KeyRing:
    """`scope:key` lines (`#` comments, blank lines ignored); errors name the line, never
    the key (a log line must not leak a secret)."""
    pairs: list[tuple[str, Scope]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scope, sep, key = line.partition(":")
        scope = scope.strip().lower()
        if not sep or scope not in SCOPES:
            raise ConfigError(
                f"{where}:{number}: expected 'search:<key>' or 'admin:<key>', got a line "
                f"starting with {line[:7]!r}…"
            )
        try:
            pairs.append((check_key(key.strip()), "admin" if scope == "admin" else "search"))
        except ValueError as err:
            raise ConfigError(f"{where}:{number}: {err}") from None
    return KeyRing.of(pairs)


def read_key_file(path: Path) -> KeyRing:
    """Read and parse the key file (ConfigError naming the file when it cannot be)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the key file: {err}") from None
    return parse_key_file(text, str(path))


def _signature(path: Path) -> tuple[int, int, int, int]:
    """What changes when the file is replaced or rewritten (links followed)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class KeySource:
    """The keys in force now: the fixed ones plus the key file's, re-read on change.

    `ring()` is called on every guarded request; it stats the file at most once per
    `check_every_s` (one syscall a second, not one per request) and re-reads it only when
    its device, inode, mtime or size changed. A file that cannot be read or parsed after
    start-up keeps the last good keys (a half-made Secret update must not lock everybody
    out, nor let everybody in) and is logged once per change.
    """

    def __init__(
        self,
        fixed: KeyRing,
        path: Path | None = None,
        check_every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed = fixed
        self.path = path
        self.check_every_s = check_every_s
        self.clock = clock
        self.enabled = bool(fixed) or path is not None
        self.reloads = 0  # successful reads of the file (tests and logs)
        self._ring = fixed
        self._signature: tuple[int, int, int, int] | None = None
        self._next_check = 0.0
        if path is not None:
            self._signature = _signature(path)
            self._ring = fixed.merged(read_key_file(path))
            self._next_check = clock() + check_every_s

    def ring(self) -> KeyRing:
        """The keys in force (the file is looked at if its check is due)."""
        if self.path is not None:
            now = self.clock()
            if now >= self._next_check:
                self._next_check = now + self.check_every_s
                self._refresh(self.path)
        return self._ring

    def _refresh(self, path: Path) -> None:
        try:
            signature = _signature(path)
        except OSError as err:
            if self._signature is not None:
                log.warning("key file %s is gone (%s); keeping the last keys", path, err)
                self._signature = None
            return
        if signature == self._signature:
            return
        self._signature = signature
        try:
            ring = read_key_file(path)
        except ConfigError as err:
            log.warning("key file not used, keeping the last keys: %s", err.reason)
            return
        self._ring = self.fixed.merged(ring)
        self.reloads += 1
        log.info("key file %s re-read: %d keys", path, len(ring))


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request sends: `X-API-Key`, else `Authorization: Bearer` (never the URL,
    which ends up in access logs and browser history)."""
    given = headers.get("x-api-key", "")
    if given:
        return given.strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def authorize(source: KeySource, headers: Mapping[str, str], need: Scope) -> str | None:
    """The key that grants `need`, None when keys are off; 401 (missing or unknown key) or
    403 (a search key where an admin key is needed) otherwise."""
    if not source.enabled:
        return None
    given = presented_key(headers)
    if not given:
        raise Unauthorized("an API key is required: send it in the X-API-Key header")
    scope = source.ring().scope_of(given)
    if scope is None:
        raise Unauthorized("the API key is not valid")
    if need == "admin" and scope != "admin":
        raise Forbidden(
            "this route needs an admin key (SIMSEARCH_ADMIN_KEYS, or an 'admin:' line of "
            "SIMSEARCH_API_KEYS_FILE); the key sent is a search key"
        )
    return given


class KeySettings(ServiceSettings):
    """The key settings every service with guarded routes reads (router and shard)."""

    admin_keys: SecretStr | None = Field(
        None,
        description="Comma-separated admin keys: /admin/* needs one when keys are on; an "
        "admin key may also search.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="File of 'search:<key>' / 'admin:<key>' lines, re-read on change "
        "(rotation without a restart). Set: keys are on, even if the file is empty.",
    )

    @field_validator("admin_keys")
    @classmethod
    def _valid_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key_list(value.get_secret_value())
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _readable_key_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                read_key_file(value)
            except ConfigError as err:
                raise ValueError(err.reason) from None
        return value

    def search_key_text(self) -> str:
        """Comma-separated search keys from the settings (none here; the router has some)."""
        return ""

    def key_source(self) -> KeySource:
        """The keys these settings configure (the file is read now, then on change)."""
        admin = self.admin_keys.get_secret_value() if self.admin_keys else ""
        fixed = KeyRing.of(
            [(k, "search") for k in parse_key_list(self.search_key_text())]
            + [(k, "admin") for k in parse_key_list(admin)]
        )
        return KeySource(fixed, self.api_keys_file)
