"""Safe decoding of untrusted image bytes into RGB images.

Every image that reaches the embedder or the router comes from a caller we do not trust, so
decoding follows one order that refuses hostile input as early and as cheaply as possible:

1. byte limit (`PayloadTooLarge`), before anything is parsed;
2. empty input (`EmptyInput`);
3. format from the magic bytes (`UnsupportedMediaType`), never from a file name or a
   content type, which the caller controls;
4. header only: width x height against the pixel limit (`ImageTooLarge`), before a single
   pixel is decoded, so a few-KB "decompression bomb" never allocates gigabytes;
5. full decode of the first frame (`CorruptImage` when it fails, e.g. a truncated JPEG);
6. EXIF orientation, then conversion of any mode to plain 8-bit RGB.

Pillow is used through the plugin class of the sniffed format rather than `Image.open`:
`Image.open` probes every registered format (a wider attack surface than the six we accept)
and emits a `DecompressionBombWarning` for images between Pillow's `MAX_IMAGE_PIXELS` and
twice that *before* we can look at the header. Silencing it would need
`warnings.catch_warnings`, which mutates process-global state and is not thread-safe; this
module runs in a thread pool, so it checks the header itself and changes no global state
(neither the warnings filters nor `ImageFile.LOAD_TRUNCATED_IMAGES`, whose default of
`False` is what makes Pillow reject truncated files).

Every Pillow failure is caught narrowly and converted into the project's error tree
(`simsearch.common.errors`); no Pillow exception escapes `decode_image`.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Final

import numpy as np
import numpy.typing as npt
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    features,
)

from simsearch.common import errors

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "DecodeLimits",
    "decode_image",
    "sniff_format",
    "to_rgb",
]


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds applied to every untrusted image before it is decoded.

    `max_bytes` is checked before any parsing, `max_pixels` against the width and height
    read from the header, before pixel data is decoded. `max_pixels` must stay at or below
    Pillow's own `Image.MAX_IMAGE_PIXELS`, so that our limit always fires first and Pillow's
    `DecompressionBombWarning` (a process-wide warning, an error under pytest) never does.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        """Refuse limits that cannot work, at construction (start-up) rather than per request."""
        if self.max_bytes < 1:
            raise ValueError(f"DecodeLimits.max_bytes must be >= 1, got {self.max_bytes}")
        if self.max_pixels < 1:
            raise ValueError(f"DecodeLimits.max_pixels must be >= 1, got {self.max_pixels}")
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit is not None and self.max_pixels > pillow_limit:
            raise ValueError(
                f"DecodeLimits.max_pixels={self.max_pixels:,} is above Pillow's "
                f"MAX_IMAGE_PIXELS={pillow_limit:,}; Pillow would warn or refuse before our "
                "limit applies, so keep max_pixels at or below it"
            )


DEFAULT_LIMITS: Final = DecodeLimits()
"""The limits `decode_image` applies when the caller passes none."""

_Opener = Callable[[IO[bytes]], ImageFile.ImageFile]

# Format name -> Pillow plugin class that parses the header on construction and decodes on
# load(). JPEG uses the plain JPEG class even for MPO files (several JPEGs back to back, same
# magic): it decodes the first image only, which is all we ever use, and skips the MPO
# detection that can emit a warning on malformed files.
_OPENERS: dict[str, _Opener] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
    "TIFF": TiffImagePlugin.TiffImageFile,
}
if features.check_module("webp"):  # WebP needs Pillow built against libwebp
    from PIL import WebPImagePlugin

    _OPENERS["WEBP"] = WebPImagePlugin.WebPImageFile

ALLOWED_FORMATS: Final[frozenset[str]] = frozenset({*_OPENERS, "MPO"})
"""Pillow format names we accept. MPO shares JPEG's magic: `sniff_format` reports it as
"JPEG" and only its first image is decoded. WEBP is present only when Pillow supports it."""

_ACCEPTED_LIST: Final = ", ".join(sorted(_OPENERS))

# BMP's "BM" is only two bytes, so also require a known DIB header size (core, info v1-v5,
# OS/2 v2) to avoid calling any text that starts with "BM" a bitmap.
_BMP_DIB_HEADER_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# Modes whose samples are wider than 8 bits; Pillow's convert("RGB") clips them instead of
# scaling, which turns a 16-bit photo white, so they go through `_wide_to_l`.
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES: Final = _SIXTEEN_BIT_MODES | {"I", "F"}

# EXIF Orientation (tag 0x0112) -> the transpose that displays the image upright.
_ORIENTATION_TAG: Final = 0x0112
_ORIENTATION_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# What Pillow raises on damaged or hostile data while parsing headers, decoding or reading
# metadata. Deliberately not `Exception`: anything else is a bug and should surface as one.
_PILLOW_DECODE_ERRORS: Final = (
    OSError,  # includes "image file is truncated" and UnidentifiedImageError
    SyntaxError,  # Pillow's "not a <format> file" / broken header
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)

_MAX_DETAIL_CHARS: Final = 200


def sniff_format(data: bytes) -> str | None:
    """Return the Pillow format name that `data`'s magic bytes identify, or None.

    Only the leading bytes count: a file name or a content type is whatever the caller chose
    to send and says nothing about what a decoder will actually parse. The result may name a
    format this build cannot decode (WEBP without libwebp); see `ALLOWED_FORMATS`.
    """
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # classic / BigTIFF
        return "TIFF"
    if (
        len(head) >= 18
        and head.startswith(b"BM")
        and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_HEADER_SIZES
    ):
        return "BMP"
    return None


def decode_image(
    data: bytes,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode untrusted bytes into a fully loaded, upright, 8-bit RGB image.

    Only the first frame of an animation is decoded. EXIF orientation is applied, so a
    portrait photo stored sideways comes out portrait. Alpha is composited onto white, and
    wide samples (16-bit, 32-bit int, float) are scaled into 0..255 rather than clipped.
    Tiny images (1x1) are valid: the model's preprocessing resizes them.

    `draft_size`, when given, lets a JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) as
    long as both sides stay >= `draft_size`; it makes big photos much cheaper when the
    caller resizes to a small input anyway. It has no effect on other formats. The pixel
    limit always applies to the full size stored in the header.

    Raises (all `errors.BadInput`): `PayloadTooLarge` (413), `EmptyInput` (400),
    `UnsupportedMediaType` (415), `ImageTooLarge` (413), `CorruptImage` (400).
    Thread-safe: touches no global state.
    """
    if draft_size is not None and draft_size < 1:
        raise ValueError(f"draft_size must be a positive number of pixels, got {draft_size}")
    _check_size(len(data), limits)
    fmt, opener = _opener_for(data)
    source: ImageFile.ImageFile | None = None
    try:
        source = opener(io.BytesIO(data))  # parses the header only
        return _decode_rgb(source, fmt, limits, draft_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check, on sizes our header check cannot see (a GIF frame larger than
        # its logical screen); the warning is only raised when warnings are errors (pytest).
        raise errors.ImageTooLarge(
            f"the {fmt} image is too large to decode ({_detail(exc)}); "
            f"the limit is {limits.max_pixels:,} pixels"
        ) from exc
    except _PILLOW_DECODE_ERRORS as exc:
        raise errors.CorruptImage(
            f"the data starts like a {fmt} image but cannot be decoded "
            f"(damaged or truncated): {_detail(exc)}"
        ) from exc
    finally:
        if source is not None:
            source.close()


def _check_size(size: int, limits: DecodeLimits) -> None:
    """Steps 1 and 2: refuse oversized or empty input before a single byte is parsed."""
    if size > limits.max_bytes:
        raise errors.PayloadTooLarge(
            f"the image is {size:,} bytes, over the limit of {limits.max_bytes:,} bytes "
            f"({_mib(limits.max_bytes)}); it was refused before decoding"
        )
    if size == 0:
        raise errors.EmptyInput("the image is empty (0 bytes); send the image file's contents")


def _opener_for(data: bytes) -> tuple[str, _Opener]:
    """Step 3: the format the magic bytes name and the one Pillow plugin that parses it.

    Refused (`UnsupportedMediaType`) when the bytes name no format we accept, or one this
    build of Pillow cannot decode (WEBP without libwebp).
    """
    fmt = sniff_format(data)
    opener = _OPENERS.get(fmt) if fmt is not None else None
    if fmt is None or opener is None:
        what = (
            "not an image format we decode"
            if fmt is None
            else f"{fmt}, which this build cannot decode"
        )
        raise errors.UnsupportedMediaType(
            f"the data is {what} (the format is identified from the file's first bytes, not "
            f"its name or content type); accepted formats: {_ACCEPTED_LIST}"
        )
    return fmt, opener


def _decode_rgb(
    source: ImageFile.ImageFile, fmt: str, limits: DecodeLimits, draft_size: int | None
) -> Image.Image:
    """Steps 4 to 6 on a parsed header: pixel limit, decode, orientation, RGB.

    Pillow's exceptions pass through to `decode_image`, which maps them; the result is
    detached from `source`, which the caller closes.
    """
    _check_pixels(fmt, source.size, limits)
    if draft_size is not None and isinstance(source, JpegImagePlugin.JpegImageFile):
        source.draft("RGB", (draft_size, draft_size))
    source.load()  # decodes the first frame; raises on truncated data
    oriented = _apply_orientation(source)
    rgb = to_rgb(oriented)
    if rgb is source:
        rgb = source.copy()  # detach the result from `source`, which the caller closes
    rgb.load()
    return rgb


def to_rgb(img: Image.Image) -> Image.Image:
    """Return `img` as 8-bit RGB; `img` itself when it already is RGB without transparency.

    Why not just `img.convert("RGB")`: it drops alpha onto black (transparent logos would
    become black squares, unlike how any viewer shows them), and it clips 16-bit/32-bit
    samples to 255 instead of scaling them (a 16-bit photo would come out white). So alpha
    (an alpha band, an RGBA palette or a tRNS colour key) is composited onto white, and wide
    modes are scaled into 0..255. Modes Pillow cannot convert to RGB raise
    `UnsupportedMediaType`.
    """
    mode = img.mode
    if mode in _WIDE_MODES:
        return _wide_to_l(img).convert("RGB")
    try:
        if img.has_transparency_data:
            # Premultiplied "La" only converts to straight "LA"; every other mode with
            # transparency converts to "RGBA" directly.
            straight = img.convert("LA") if mode == "La" else img
            rgba = straight.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if mode == "RGB":
            return img
        return img.convert("RGB")
    except ValueError as exc:  # e.g. "conversion from LAB to RGB not supported"
        raise errors.UnsupportedMediaType(
            f"the image uses colour mode {mode}, which cannot be converted to RGB: {_detail(exc)}"
        ) from exc


def _check_pixels(fmt: str, size: tuple[int, int], limits: DecodeLimits) -> None:
    """Refuse the image from its header dimensions, before any pixel memory is allocated."""
    width, height = size
    if width < 1 or height < 1:
        raise errors.CorruptImage(
            f"the {fmt} header gives an empty size {width}x{height}; the image has no pixels"
        )
    pixels = width * height
    if pixels > limits.max_pixels:
        raise errors.ImageTooLarge(
            f"the {fmt} image is {width}x{height} = {pixels:,} pixels, over the limit of "
            f"{limits.max_pixels:,} pixels"
        )


def _apply_orientation(img: ImageFile.ImageFile) -> Image.Image:
    """Transpose `img` as its EXIF (or XMP) Orientation says; `img` itself when upright.

    This is what `ImageOps.exif_transpose` does, minus two things we do not want here: a
    full copy of upright images (the common case) and re-serialising the EXIF block, which
    can fail on malformed metadata. Unreadable metadata means "no orientation", not a
    rejected image: the pixels decoded fine.
    """
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
        method = _ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    except _PILLOW_DECODE_ERRORS:
        method = None
    if method is None:
        return img
    return img.transpose(method)


def _wide_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit int or float greyscale image into an 8-bit "L" image.

    16-bit modes map their full range (0..65535 / 257 -> 0..255), which keeps absolute
    brightness. "I" data within 0..65535 is 16-bit data that Pillow widened (TIFF, some
    PNGs) and is scaled the same way; "F" data within 0..1 is a normalised float image and
    is multiplied by 255. Anything else has no canonical range and is stretched min..max.
    A tRNS colour key (16-bit PNGs may carry one) makes those pixels white, like alpha.
    """
    arr = np.asarray(img)
    # float32 represents every 16-bit value exactly and halves the memory of float64.
    values: npt.NDArray[np.float32] = np.nan_to_num(
        arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0
    )
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode in _SIXTEEN_BIT_MODES or (img.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / np.float32(257.0)
    elif img.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.clip(values, 0.0, 255.0)
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    transparency = img.info.get("transparency")
    if isinstance(transparency, int) and not isinstance(transparency, bool):
        out[arr == transparency] = 255
    return Image.fromarray(out)


def _detail(exc: BaseException) -> str:
    """Pillow's message, shortened: enough to say what broke, not a wall of text."""
    text = str(exc) or type(exc).__name__
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[: _MAX_DETAIL_CHARS - 3] + "..."
    return text


def _mib(n_bytes: int) -> str:
    """Human-readable size for error messages (limits are usually whole MiB)."""
    mib = n_bytes / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{n_bytes / 1024:g} KiB"
