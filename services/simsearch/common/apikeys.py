"""API keys with scopes (search, admin), from settings and from a key file re-read on change.

Shared by the router (search and admin routes) and the shards (`/admin/reload`), which
read the same Secret. Keys come from three places, merged:

- `SIMSEARCH_API_KEYS`: comma-separated search keys (the router's setting);
- `SIMSEARCH_ADMIN_KEYS`: comma-separated admin keys (an admin key may also search);
- `SIMSEARCH_API_KEYS_FILE`: a file with one `scope:key` per line (`search:…`, `admin:…`;
  blank lines and `#` comments ignored), re-read when it changes so keys rotate without a
  restart. A line may restrict its key to some collections (named indexes):
  `search:<key> collections=cats,dogs`; a key without the option may use every one.
  Kubernetes updates a Secret volume by swapping a `..data` symlink to a new folder;
  `os.stat` follows the links, so the swap shows as a new inode.

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
from simsearch.common.manifest import is_index_name
from simsearch.common.settings import ServiceSettings

__all__ = [
    "Collections",
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
# The collections a key may search; None: every one (keys from the variables, and file
# lines without `collections=`).
Collections = frozenset[str] | None
_COLLECTIONS_OPTION = "collections="
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


KeyPair = tuple[str, Scope] | tuple[str, Scope, Collections]


def _wider(a: Collections, b: Collections) -> Collections:
    """Both grants of one key together: every collection if either allows every one."""
    return None if a is None or b is None else a | b


@dataclass(frozen=True)
class KeyRing:
    """The accepted keys, their scopes and collections (a key listed more than once gets
    the widest of its grants: admin over search, the union of its collections, all of
    them when one listing has no restriction)."""

    entries: tuple[tuple[bytes, Scope, Collections], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[KeyPair]) -> KeyRing:
        grants: dict[str, tuple[Scope, Collections]] = {}
        for key, scope, *rest in pairs:
            allowed: Collections = rest[0] if rest else None
            if key in grants:
                old_scope, old_allowed = grants[key]
                scope = "admin" if "admin" in (scope, old_scope) else "search"
                allowed = _wider(allowed, old_allowed)
            grants[key] = (scope, allowed)
        return cls(tuple((key.encode(), *grant) for key, grant in sorted(grants.items())))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def merged(self, other: KeyRing) -> KeyRing:
        """Both rings' keys (the wider grant where they overlap)."""
        pairs = [(k.decode(), s, c) for k, s, c in (*self.entries, *other.entries)]
        return KeyRing.of(pairs)

    def grant_of(self, given: str) -> tuple[Scope, Collections] | None:
        """The scope and collections of `given`, or None; every key is compared, in
        constant time each (no early exit)."""
        candidate = given.encode("utf-8", "replace")
        found: tuple[Scope, Collections] | None = None
        for key, scope, allowed in self.entries:
            if hmac.compare_digest(candidate, key):
                found = (scope, allowed)
        return found

    def scope_of(self, given: str) -> Scope | None:
        """The scope of `given`, or None (see `grant_of`)."""
        grant = self.grant_of(given)
        return grant[0] if grant is not None else None


def parse_key_file(text: str, where: str) -> KeyRing:
    """`scope:key [collections=a,b]` lines (`#` comments, blank lines ignored); errors name
    the line, never the key (a log line must not leak a secret)."""
    pairs: list[KeyPair] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scope, sep, rest = line.partition(":")
        scope = scope.strip().lower()
        if not sep or scope not in SCOPES:
            raise ConfigError(
                f"{where}:{number}: expected 'search:<key>' or 'admin:<key>', got a line "
                f"starting with {line[:7]!r}…"
            )
        try:
            key, allowed = _key_and_collections(rest)
        except ValueError as err:
            raise ConfigError(f"{where}:{number}: {err}") from None
        pairs.append((key, "admin" if scope == "admin" else "search", allowed))
    return KeyRing.of(pairs)


def _key_and_collections(rest: str) -> tuple[str, Collections]:
    """The key of a key file line (after `scope:`) and its `collections=` option, if any."""
    key, *options = rest.split() or [""]
    check_key(key)
    allowed: Collections = None
    for option in options:
        if not option.startswith(_COLLECTIONS_OPTION):  # a space inside the key, most likely
            raise ValueError(
                "API keys must be printable ASCII without spaces or commas; after the key "
                "only 'collections=<name>,<name>' may follow"
            )
        names = [n for n in option.removeprefix(_COLLECTIONS_OPTION).split(",") if n]
        bad = [n for n in names if not is_index_name(n)]
        if not names or bad:
            raise ValueError(
                f"'collections=' needs comma-separated collection names, got {option[:80]!r}"
            )
        allowed = frozenset(names) | (allowed or frozenset())  # the option given twice: both
    return key, allowed


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


def authorize(
    source: KeySource, headers: Mapping[str, str], need: Scope, collection: str | None = None
) -> str | None:
    """The key that grants `need` (on `collection`, when the request is about one), None
    when keys are off; 401 (missing or unknown key) or 403 (a search key where an admin key
    is needed, or a key restricted to other collections) otherwise."""
    if not source.enabled:
        return None
    given = presented_key(headers)
    if not given:
        raise Unauthorized("an API key is required: send it in the X-API-Key header")
    grant = source.ring().grant_of(given)
    if grant is None:
        raise Unauthorized("the API key is not valid")
    scope, allowed = grant
    if need == "admin" and scope != "admin":
        raise Forbidden(
            "this route needs an admin key (SIMSEARCH_ADMIN_KEYS, or an 'admin:' line of "
            "SIMSEARCH_API_KEYS_FILE); the key sent is a search key"
        )
    if collection is not None and allowed is not None and collection not in allowed:
        raise Forbidden(
            f"the API key sent may not use collection {collection[:80]!r}; it may use: "
            f"{', '.join(sorted(allowed))}"
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
        description="File of 'search:<key>' / 'admin:<key>' lines (optionally followed by "
        "' collections=a,b' to restrict the key to those collections), re-read on change "
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
