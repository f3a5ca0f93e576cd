"""The image robustness corpus, generated in memory: valid oddities and hostile inputs.

Every factory is deterministic (fixed colours and gradients, no randomness, no files, no
network) and cheap, so unit tests and HTTP-level tests can share the same bytes. `CASES`
states the documented outcome of decoding each one; an HTTP test can post each payload and
compare the status and the error code in the JSON body.

Hostile inputs are built by hand where Pillow would refuse to write them: the PNG bomb is a
valid PNG header claiming 50000x50000 pixels followed by only the first rows of pixel data,
a few hundred bytes in all. A decoder that trusted the header would allocate 2.5 GB before
noticing anything; `decode_image` must refuse it from the header alone.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import Image, features

from simsearch.common import errors
from simsearch.common.imaging import DEFAULT_LIMITS

__all__ = [
    "CASES",
    "HAS_WEBP",
    "Case",
    "animated_gif",
    "bmp",
    "cmyk_jpeg",
    "empty",
    "exif_rotated_jpeg",
    "gif_bomb",
    "jpeg",
    "jpeg_bomb",
    "la_png",
    "mpo",
    "one_by_one",
    "oversized",
    "palette_png",
    "pdf",
    "png_16bit",
    "png_bomb",
    "png_magic_only",
    "png_over_pillow_warning",
    "rgba_png",
    "svg",
    "text_named_jpg",
    "tiff",
    "tiff_16bit_big_endian",
    "truncated_jpeg",
    "truncated_png",
    "webp",
]

HAS_WEBP: Final = features.check_module("webp")

# Colours chosen far apart so tests can tell frames / channels apart with a tolerance.
RED: Final = (220, 20, 20)
GREEN: Final = (20, 200, 20)
BLUE: Final = (20, 20, 220)


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _gradient_rgb(width: int, height: int) -> Image.Image:
    """A smooth two-axis gradient: compresses like a photo, never a flat colour."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    r = np.broadcast_to(x, (height, width))
    g = np.broadcast_to(y, (height, width))
    b = (r + g) / 2
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


# --- refused inputs -------------------------------------------------------------------------


def empty() -> bytes:
    """No bytes at all (an upload with an empty file)."""
    return b""


def text_named_jpg() -> bytes:
    """Plain text, as someone uploading `notes.jpg` that is really a text file would send."""
    return b"This is not a JPEG, whatever the file name says.\nJust some text.\n" * 4


def pdf() -> bytes:
    """The start of a PDF document: a real file type, but not an image we decode."""
    return b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n%%EOF\n"


def svg() -> bytes:
    """An SVG: an image to a browser, but XML text to us (never rasterised server-side)."""
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
        b'height="10"><rect width="10" height="10" fill="red"/></svg>\n'
    )


def jpeg(width: int = 64, height: int = 48) -> bytes:
    """A plain baseline RGB JPEG with a gradient."""
    return _save(_gradient_rgb(width, height), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    """A real JPEG cut in half: valid header, half of the entropy-coded data, no EOI."""
    data = jpeg(128, 96)
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    """A real PNG cut in half, in the middle of its IDAT chunk."""
    data = _save(_gradient_rgb(128, 96), "PNG")
    return data[: len(data) // 2]


def png_magic_only() -> bytes:
    """Only the 8-byte PNG signature: identifies as PNG, has no header at all."""
    return b"\x89PNG\r\n\x1a\n"


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose header claims `width`x`height` 1-bit pixels, a few hundred bytes long.

    The IDAT holds a complete zlib stream of only the first 64 rows of zeros; the claimed
    size is what matters, because a decoder allocates the image from the header before it
    reads pixel data (Pillow would use one byte per pixel: 2.5 GB for 50000x50000).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = zlib.compress(row * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_over_pillow_warning() -> bytes:
    """A PNG bomb of 10000x10000 = 100 M pixels: above our 40 M limit and above Pillow's
    `MAX_IMAGE_PIXELS` (~89.5 M) but below twice it, the band where `Image.open` would emit
    a `DecompressionBombWarning` (an error under pytest) instead of refusing."""
    return png_bomb(10_000, 10_000)


def jpeg_bomb() -> bytes:
    """A tiny real JPEG whose SOF header is patched to claim 65000x65000 pixels."""
    data = bytearray(jpeg(16, 16))
    sof = data.find(b"\xff\xc0")
    if sof < 0:  # pragma: no cover - Pillow writes baseline JPEGs
        raise RuntimeError("no SOF0 marker in the generated JPEG")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    struct.pack_into(">HH", data, sof + 5, 65_000, 65_000)
    return bytes(data)


def gif_bomb() -> bytes:
    """A GIF whose logical screen claims 65535x65535 pixels around a 1x1 frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", 65_535, 65_535, 0x80, 0, 0)  # 2-colour table
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    pixels = b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one sub-block, terminator
    return header + palette + descriptor + pixels + b";"


def oversized(limit_bytes: int = DEFAULT_LIMITS.max_bytes) -> bytes:
    """A valid JPEG padded after its EOI marker to `limit_bytes + 1` bytes.

    It would decode fine (decoders ignore trailing bytes), so a 413 proves the byte limit
    is enforced on the size alone, before any parsing.
    """
    data = jpeg(32, 32)
    return data + b"\x00" * max(0, limit_bytes + 1 - len(data))


# --- accepted oddities ----------------------------------------------------------------------


def one_by_one() -> bytes:
    """A 1x1 RGB PNG: tiny but valid; the model's preprocessing resizes it."""
    return _save(Image.new("RGB", (1, 1), RED), "PNG")


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG (print workflows): left half pure cyan, right half pure magenta."""
    img = Image.new("CMYK", (32, 16), (255, 0, 0, 0))
    img.paste((0, 255, 0, 0), (16, 0, 32, 16))
    return _save(img, "JPEG", quality=95)


def animated_gif() -> bytes:
    """A 3-frame GIF: red, then green, then blue. Only the first (red) frame is used."""
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_16bit() -> bytes:
    """A 16-bit greyscale PNG (mode I;16): a horizontal gradient over the full 0..65535."""
    row = np.linspace(0, 65_535, 256).round().astype(np.uint16)
    return _save(Image.fromarray(np.tile(row, (8, 1))), "PNG")


def tiff_16bit_big_endian() -> bytes:
    """A big-endian 16-bit greyscale TIFF (mode I;16B): the same full-range gradient."""
    row = np.linspace(0, 65_535, 256).round().astype(">u2")
    return _save(Image.fromarray(np.tile(row, (8, 1))), "TIFF")


def rgba_png() -> bytes:
    """An RGBA PNG: left half fully transparent (black underneath), right half opaque blue."""
    img = Image.new("RGBA", (16, 8), (0, 0, 0, 0))
    img.paste((*BLUE, 255), (8, 0, 16, 8))
    return _save(img, "PNG")


def palette_png() -> bytes:
    """A palette (P) PNG with a tRNS chunk: index 0 transparent, index 1 opaque red."""
    img = Image.new("P", (16, 8), 0)
    img.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    img.paste(1, (8, 0, 16, 8))
    return _save(img, "PNG", transparency=0)


def la_png() -> bytes:
    """A greyscale + alpha (LA) PNG: left half transparent black, right half opaque grey 64."""
    img = Image.new("LA", (16, 8), (0, 0))
    img.paste((64, 255), (8, 0, 16, 8))
    return _save(img, "PNG")


def exif_rotated_jpeg() -> bytes:
    """A 64x32 (landscape) JPEG with EXIF Orientation=6: displays as 32x64 portrait.

    The top-left quarter is red, so a test can also check which way it was rotated:
    orientation 6 means "rotate 90 degrees clockwise to display", which moves the stored
    top-left corner to the displayed top-right.
    """
    img = Image.new("RGB", (64, 32), BLUE)
    img.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, "JPEG", quality=95, exif=exif.tobytes())


def mpo() -> bytes:
    """A 2-image MPO (stereo camera format, JPEG magic): red then green; red is used."""
    first, second = Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), GREEN)
    return _save(first, "MPO", save_all=True, append_images=[second], quality=95)


def bmp() -> bytes:
    """A 24-bit BMP with the standard gradient."""
    return _save(_gradient_rgb(32, 16), "BMP")


def tiff() -> bytes:
    """An uncompressed RGB TIFF with the standard gradient."""
    return _save(_gradient_rgb(32, 16), "TIFF")


def webp() -> bytes:
    """A lossless RGB WebP (requires Pillow built with libwebp; see `HAS_WEBP`)."""
    return _save(Image.new("RGB", (16, 16), GREEN), "WEBP", lossless=True)


# --- the table ------------------------------------------------------------------------------

Case = tuple[str, Callable[[], bytes], int, str | None]
"""(name, factory of the payload, expected HTTP status, expected error code or None)."""

CASES: Final[list[Case]] = [
    ("empty", empty, 400, errors.EmptyInput.code),
    ("text_named_jpg", text_named_jpg, 415, errors.UnsupportedMediaType.code),
    ("pdf", pdf, 415, errors.UnsupportedMediaType.code),
    ("svg", svg, 415, errors.UnsupportedMediaType.code),
    ("truncated_jpeg", truncated_jpeg, 400, errors.CorruptImage.code),
    ("truncated_png", truncated_png, 400, errors.CorruptImage.code),
    ("png_magic_only", png_magic_only, 400, errors.CorruptImage.code),
    ("png_bomb", png_bomb, 413, errors.ImageTooLarge.code),
    ("png_over_pillow_warning", png_over_pillow_warning, 413, errors.ImageTooLarge.code),
    ("jpeg_bomb", jpeg_bomb, 413, errors.ImageTooLarge.code),
    ("gif_bomb", gif_bomb, 413, errors.ImageTooLarge.code),
    # Uses DecodeLimits' default; an HTTP test with another configured limit should build
    # its own payload with oversized(that_limit).
    ("oversized", oversized, 413, errors.PayloadTooLarge.code),
    ("jpeg", jpeg, 200, None),
    ("one_by_one", one_by_one, 200, None),
    ("cmyk_jpeg", cmyk_jpeg, 200, None),
    ("animated_gif", animated_gif, 200, None),
    ("png_16bit", png_16bit, 200, None),
    ("tiff_16bit_big_endian", tiff_16bit_big_endian, 200, None),
    ("rgba_png", rgba_png, 200, None),
    ("palette_png", palette_png, 200, None),
    ("la_png", la_png, 200, None),
    ("exif_rotated_jpeg", exif_rotated_jpeg, 200, None),
    ("mpo", mpo, 200, None),
    ("bmp", bmp, 200, None),
    ("tiff", tiff, 200, None),
]
if HAS_WEBP:
    CASES.append(("webp", webp, 200, None))
