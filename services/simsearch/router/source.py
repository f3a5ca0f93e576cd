"""What a shard list comes from: the one interface every discovery source implements.

Its own module so that the Kubernetes source (`router/kube.py`) and the registry with the
simple sources (`router/discovery.py`, which picks a source and imports the Kubernetes one
lazily) both depend on it and not on each other: no import loop between them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["ShardSource"]


class ShardSource(ABC):
    """Lists the shard base URLs to poll; asked again on every poll."""

    @abstractmethod
    async def urls(self) -> list[str]:
        """The current shard URLs (no trailing slash)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release what the source holds (the Kubernetes source's watch thread)."""
