"""The repository's folders, found once, so that moving a test file never breaks a path.

Tests used to count `Path(__file__).parents[N]` each for itself, which silently pointed
elsewhere when a file moved one folder deeper. This module sits at a fixed place
(`tests/support/`), so every path below is computed from one anchor.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where `pyproject.toml` is)."""
SERVICES = ROOT / "services"
"""What goes on `PYTHONPATH` for a subprocess to import `simsearch`."""
PACKAGE = SERVICES / "simsearch"
"""The source package, for tests that parse it rather than import it."""
SCRIPTS = ROOT / "scripts"
SAMPLES = ROOT / "samples" / "flowers"
"""The bundled flower photos: `labels.csv` and `images/<class>/<file>.jpg`."""
SAMPLE_IMAGES = SAMPLES / "images"
TOOLS_BIN = ROOT / ".tools" / "bin"
"""helm, kubectl and hadolint, installed by `make tools`."""
FUZZ = ROOT / "tests" / "fuzz"
"""The schemathesis configuration and hooks."""
