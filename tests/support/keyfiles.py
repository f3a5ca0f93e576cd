"""Key files the way Kubernetes mounts a Secret volume (for the key-rotation tests)."""

from __future__ import annotations

import os
from pathlib import Path


def swap_secret_volume(volume: Path, text: str, generation: int) -> Path:
    """Write `text` as the volume's `keys` file the way the kubelet updates a Secret: a new
    timestamped folder, then an atomic rename of the `..data` symlink onto it; `keys` is a
    link to `..data/keys`. Returns the path of `keys` (what SIMSEARCH_API_KEYS_FILE names)."""
    volume.mkdir(parents=True, exist_ok=True)
    folder = volume / f"..2025_01_01_00_00_{generation:02d}"
    folder.mkdir()
    (folder / "keys").write_text(text)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(folder.name)
    os.replace(tmp, volume / "..data")
    keys = volume / "keys"
    if not keys.is_symlink():
        keys.symlink_to("..data/keys")
    return keys
