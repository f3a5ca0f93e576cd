"""Schemathesis hooks for the fuzz pass (loaded by the CLI through SCHEMATHESIS_HOOKS).

The upload routes declare their file parts as `image/jpeg, image/png, ...`
(`simsearch.common.apidoc.IMAGE_MEDIA_TYPES`). A schema cannot say "bytes that decode",
so without these strategies every *positive* upload would be random bytes, refused with
415, and the image path behind it (decode, embed, search) would never be fuzzed. Here
each media type draws a real image of that format, of random size and colour; negative
cases still get arbitrary bytes (schemathesis skips custom strategies for them).
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


def _encode(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


def image_strategy(fmt: str) -> st.SearchStrategy[bytes]:
    """Valid `fmt` files from 1×1 to 64×64 pixels."""
    side = st.integers(min_value=1, max_value=64)
    channel = st.integers(min_value=0, max_value=255)
    return st.builds(
        _encode, st.just(fmt), st.tuples(side, side), st.tuples(channel, channel, channel)
    )


for _media_type, _fmt in _FORMATS.items():
    schemathesis.openapi.media_type(_media_type, image_strategy(_fmt))
