"""What a build has embedded so far, on local disk, so that a build that dies resumes.

Each finished chunk of vectors is written as one `.npz` file (keys + float32 vectors)
with an atomic rename, so a chunk is either wholly there or not at all. A restarted build
loads the chunks and embeds only the keys that are not in them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class Journal:
    """Chunks of (keys, vectors) and the keys that could not be embedded, in a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.npz"))

    def load(self) -> dict[str, np.ndarray]:
        """Every embedded key with its vector."""
        done: dict[str, np.ndarray] = {}
        for path in self._chunks():
            with np.load(path, allow_pickle=False) as data:
                for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                    done[str(key)] = vector
        return done

    def failed(self) -> dict[str, str]:
        """Keys refused by the embedder (corrupt, not an image…) with the reason."""
        path = self.folder / "failed.jsonl"
        if not path.exists():
            return {}
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {row["key"]: row["reason"] for row in rows}

    def append(self, keys: list[str], vectors: np.ndarray, failed: dict[str, str]) -> None:
        """Record one finished chunk (atomically) and its refused keys."""
        if keys:
            number = len(self._chunks())
            final = self.folder / f"chunk-{number:06d}.npz"
            temp = self.folder / f".chunk-{number:06d}.tmp.npz"
            np.savez(temp, keys=np.array(keys, dtype=str), vectors=vectors.astype(np.float32))
            os.replace(temp, final)
        if failed:
            with (self.folder / "failed.jsonl").open("a") as out:
                for key, reason in failed.items():
                    out.write(json.dumps({"key": key, "reason": reason}) + "\n")

    def clear(self) -> None:
        """Forget everything (after a successful publish)."""
        for path in [*self._chunks(), self.folder / "failed.jsonl"]:
            path.unlink(missing_ok=True)
