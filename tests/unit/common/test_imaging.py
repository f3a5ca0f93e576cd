"""Tests for simsearch.common.imaging: every case of the robustness corpus, plus the details.

The corpus (tests/support/bad_images.py) is shared with the HTTP-level tests; here each case
is decoded directly and its error class, status code and reason are checked.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile

from simsearch.common import errors, imaging
from simsearch.common.http import status_for
from simsearch.common.imaging import (
    ALLOWED_FORMATS,
    DEFAULT_LIMITS,
    DecodeLimits,
    decode_image,
    sniff_format,
    to_rgb,
)
from tests.support import bad_images
from tests.support.bad_images import BLUE, CASES, GREEN, RED


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


# --- the shared table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "status", "code"),
    [pytest.param(factory, status, code, id=name) for name, factory, status, code in CASES],
)
def test_case_table(factory: Callable[[], bytes], status: int, code: str | None) -> None:
    data = factory()
    if status == 200:
        img = decode_image(data)
        assert img.mode == "RGB"
        assert img.width >= 1
        assert img.height >= 1
        return
    with pytest.raises(errors.BadInput) as caught:
        decode_image(data)
    assert status_for(caught.value) == status
    assert caught.value.code == code
    assert caught.value.reason  # a human-readable explanation, never empty


def test_case_table_names_are_unique_and_cover_the_brief() -> None:
    names = [name for name, *_ in CASES]
    assert len(names) == len(set(names))
    required = {
        "empty",
        "text_named_jpg",
        "truncated_jpeg",
        "png_bomb",
        "one_by_one",
        "cmyk_jpeg",
        "animated_gif",
        "png_16bit",
        "oversized",
        "rgba_png",
        "palette_png",
        "la_png",
        "exif_rotated_jpeg",
    }
    assert required <= set(names)
    assert ("webp" in names) == bad_images.HAS_WEBP


def test_corpus_is_deterministic() -> None:
    for name, factory, *_ in CASES:
        if name != "oversized":  # 20 MiB: deterministic too, but not worth building twice
            assert factory() == factory(), name


def test_corpus_sources_have_the_claimed_modes() -> None:
    """Guard the corpus itself: each oddity really is the oddity it claims to be."""

    def opened(data: bytes) -> Image.Image:
        return Image.open(io.BytesIO(data))

    assert opened(bad_images.cmyk_jpeg()).mode == "CMYK"
    assert opened(bad_images.png_16bit()).mode in {"I;16", "I"}
    assert opened(bad_images.tiff_16bit_big_endian()).mode == "I;16B"
    assert opened(bad_images.rgba_png()).mode == "RGBA"
    assert opened(bad_images.palette_png()).mode == "P"
    assert opened(bad_images.la_png()).mode == "LA"
    gif = opened(bad_images.animated_gif())
    assert getattr(gif, "n_frames", 1) == 3
    assert opened(bad_images.mpo()).format == "MPO"
    rotated = opened(bad_images.exif_rotated_jpeg())
    assert rotated.size == (64, 32)
    assert rotated.getexif()[0x0112] == 6
    assert len(bad_images.png_bomb()) < 4096
    assert len(bad_images.oversized(1000)) == 1001


# --- refusals: order, class, reason ------------------------------------------------------------


def test_empty_input() -> None:
    with pytest.raises(errors.EmptyInput, match="empty"):
        decode_image(b"")


def test_payload_too_large_is_checked_before_parsing() -> None:
    limits = DecodeLimits(max_bytes=1000)
    with pytest.raises(errors.PayloadTooLarge) as caught:
        decode_image(bad_images.oversized(1000), limits)
    assert "1,001 bytes" in caught.value.reason
    assert "1,000 bytes" in caught.value.reason
    # Not even the magic bytes are looked at: garbage of the same size gets the same answer.
    with pytest.raises(errors.PayloadTooLarge):
        decode_image(b"\x00" * 1001, limits)


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    data = bad_images.jpeg(8, 8)
    img = decode_image(data, DecodeLimits(max_bytes=len(data)))
    assert img.size == (8, 8)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bad_images.text_named_jpg(), id="text"),
        pytest.param(bad_images.pdf(), id="pdf"),
        pytest.param(bad_images.svg(), id="svg"),
        pytest.param(b"PK\x03\x04" + b"\x00" * 40, id="zip"),
        pytest.param(b"BM this is not a bitmap, only text starting with BM", id="text-BM"),
        pytest.param(b"\x00", id="one-byte"),
    ],
)
def test_unsupported_media_type_lists_accepted_formats(data: bytes) -> None:
    with pytest.raises(errors.UnsupportedMediaType) as caught:
        decode_image(data)
    assert status_for(caught.value) == 415
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF"):
        assert fmt in caught.value.reason


def test_recognised_format_without_a_decoder_is_unsupported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WEBP on a Pillow without libwebp: identified, but refused as 415, not as corrupt."""
    monkeypatch.delitem(imaging._OPENERS, "WEBP", raising=False)
    data = b"RIFF\x10\x00\x00\x00WEBPVP8L" + b"\x00" * 16
    with pytest.raises(errors.UnsupportedMediaType, match="WEBP"):
        decode_image(data)


@pytest.mark.parametrize(
    "factory",
    [bad_images.truncated_jpeg, bad_images.truncated_png, bad_images.png_magic_only],
)
def test_corrupt_images(factory: Callable[[], bytes]) -> None:
    with pytest.raises(errors.CorruptImage) as caught:
        decode_image(factory())
    assert status_for(caught.value) == 400
    assert "cannot be decoded" in caught.value.reason
    assert isinstance(caught.value.__cause__, Exception)  # Pillow's error is chained


def test_truncated_jpeg_is_rejected_without_touching_pillow_globals() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(errors.CorruptImage, match="truncated"):
        decode_image(bad_images.truncated_jpeg())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_no_global_state_changes() -> None:
    filters_before = list(warnings.filters)
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    for _, factory, *_ in CASES:
        with contextlib.suppress(errors.BadInput):
            decode_image(factory())
    assert list(warnings.filters) == filters_before
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("factory", "dims"),
    [
        (bad_images.png_bomb, "50000x50000"),
        (bad_images.png_over_pillow_warning, "10000x10000"),
        (bad_images.jpeg_bomb, "65000x65000"),
        (bad_images.gif_bomb, "65535x65535"),
    ],
)
def test_bombs_report_dimensions_and_limit(factory: Callable[[], bytes], dims: str) -> None:
    with pytest.raises(errors.ImageTooLarge) as caught:
        decode_image(factory())
    assert status_for(caught.value) == 413
    assert dims in caught.value.reason
    assert f"{DEFAULT_LIMITS.max_pixels:,}" in caught.value.reason


@pytest.mark.skipif(sys.platform == "win32", reason="ru_maxrss is POSIX-only")
def test_png_bomb_is_refused_fast_and_without_allocating() -> None:
    import resource  # POSIX-only

    data = bad_images.png_bomb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(errors.ImageTooLarge):
        decode_image(data)
    elapsed = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert elapsed < 0.5
    # ru_maxrss is KiB on Linux, bytes on macOS; 64 MiB either way is far below the 2.5 GB
    # the header asks for.
    assert grown < 64 * 1024 * (1024 if sys.platform == "darwin" else 1)


def test_small_custom_pixel_limit() -> None:
    data = _png(Image.new("RGB", (20, 20), RED))
    with pytest.raises(errors.ImageTooLarge) as caught:
        decode_image(data, DecodeLimits(max_pixels=100))
    assert "20x20" in caught.value.reason
    assert "400 pixels" in caught.value.reason
    assert "100 pixels" in caught.value.reason
    assert decode_image(data, DecodeLimits(max_pixels=400)).size == (20, 20)


@pytest.mark.parametrize(
    ("side", "cause"),
    [
        (65_535, Image.DecompressionBombError),  # over twice Pillow's limit: Pillow refuses
        (10_000, Image.DecompressionBombWarning),  # Pillow's warning band, raised as an error
        (7_000, type(None)),  # under Pillow's limit: our own check on the grown size
    ],
)
def test_gif_frame_larger_than_its_screen_is_image_too_large(side: int, cause: type) -> None:
    """A GIF frame larger than its 1x1 logical screen grows the image while the first frame
    is read, past our header check; Pillow's own bomb checks then fire and must come out as
    ImageTooLarge, never as a Pillow exception."""
    header = b"GIF89a" + b"\x01\x00\x01\x00" + b"\x80\x00\x00"  # 1x1 screen, 2 colours
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + (0).to_bytes(2, "little") * 2 + side.to_bytes(2, "little") * 2
    data = header + palette + descriptor + b"\x00\x02\x02\x44\x01\x00;"
    with warnings.catch_warnings():  # test-only: make the warning band deterministic
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(errors.ImageTooLarge) as caught:
            decode_image(data)
    assert type(caught.value.__cause__) is cause
    assert f"{DEFAULT_LIMITS.max_pixels:,}" in caught.value.reason


def test_zero_sized_header_is_corrupt() -> None:
    data = bytearray(_png(Image.new("RGB", (4, 4))))
    data[16:20] = (0).to_bytes(4, "big")  # IHDR width (CRC now wrong as well)
    with pytest.raises(errors.CorruptImage):
        decode_image(bytes(data))


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        DecodeLimits(max_bytes=0)
    with pytest.raises(ValueError, match="max_pixels"):
        DecodeLimits(max_pixels=0)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    assert pillow_limit is not None
    assert pillow_limit > DEFAULT_LIMITS.max_pixels
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        DecodeLimits(max_pixels=pillow_limit + 1)


def test_draft_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="draft_size"):
        decode_image(bad_images.jpeg(), draft_size=0)


# --- accepted oddities: the pixels are right -------------------------------------------------


def test_output_is_always_loaded_rgb_and_detached() -> None:
    for name, factory, status, _ in CASES:
        if status != 200:
            continue
        img = decode_image(factory())
        assert img.mode == "RGB", name
        assert not isinstance(img, ImageFile.ImageFile), name  # a plain, loaded image
        assert img.load() is not None, name
        assert np.asarray(img).shape == (img.height, img.width, 3), name


def test_one_by_one_is_accepted() -> None:
    img = decode_image(bad_images.one_by_one())
    assert img.size == (1, 1)
    assert _close(_pixel(img, (0, 0)), RED, tol=0)


def test_exif_rotation_swaps_width_and_height() -> None:
    img = decode_image(bad_images.exif_rotated_jpeg())
    assert img.size == (32, 64)
    # Orientation 6 rotates 90 degrees clockwise: the stored top-left red square is now at
    # the top-right, and the top-left is blue.
    assert _close(_pixel(img, (31 - 8, 8)), RED)
    assert _close(_pixel(img, (4, 4)), BLUE)
    assert _close(_pixel(img, (4, 60)), BLUE)


def test_cmyk_jpeg_has_sane_colours() -> None:
    img = decode_image(bad_images.cmyk_jpeg())
    assert img.size == (32, 16)
    assert _close(_pixel(img, (4, 8)), (0, 255, 255), tol=24)  # cyan
    assert _close(_pixel(img, (28, 8)), (255, 0, 255), tol=24)  # magenta


def test_animated_gif_gives_first_frame() -> None:
    img = decode_image(bad_images.animated_gif())
    assert img.size == (16, 16)
    assert _close(_pixel(img, (8, 8)), RED)


def test_mpo_gives_first_image() -> None:
    img = decode_image(bad_images.mpo())
    assert _close(_pixel(img, (8, 8)), RED)


@pytest.mark.parametrize("factory", [bad_images.png_16bit, bad_images.tiff_16bit_big_endian])
def test_16bit_gradient_is_scaled_not_clipped(factory: Callable[[], bytes]) -> None:
    img = decode_image(factory())
    arr = np.asarray(img)
    assert arr.shape == (8, 256, 3)
    assert int(arr.min()) <= 2
    assert int(arr.max()) >= 253
    row = arr[0, :, 0].astype(int)
    assert (np.diff(row) >= 0).all()  # still a monotonic gradient
    assert len(np.unique(row)) > 200  # not collapsed to a few levels
    assert abs(int(row[128]) - 128) <= 2  # mid-grey in the middle
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()


def test_rgba_transparent_pixels_become_white() -> None:
    img = decode_image(bad_images.rgba_png())
    assert _pixel(img, (2, 4)) == (255, 255, 255)
    assert _pixel(img, (12, 4)) == BLUE


def test_palette_transparency_becomes_white() -> None:
    img = decode_image(bad_images.palette_png())
    assert _pixel(img, (2, 4)) == (255, 255, 255)
    assert _pixel(img, (12, 4)) == RED


def test_la_png_becomes_grey_on_white() -> None:
    img = decode_image(bad_images.la_png())
    assert _pixel(img, (2, 4)) == (255, 255, 255)
    assert _pixel(img, (12, 4)) == (64, 64, 64)


@pytest.mark.skipif(not bad_images.HAS_WEBP, reason="Pillow built without WebP")
def test_webp() -> None:
    assert "WEBP" in ALLOWED_FORMATS
    img = decode_image(bad_images.webp())
    assert _pixel(img, (8, 8)) == GREEN


def test_bmp_and_tiff_match_the_source_gradient() -> None:
    expected = np.asarray(Image.open(io.BytesIO(bad_images.bmp())).convert("RGB"))
    for data in (bad_images.bmp(), bad_images.tiff()):
        assert (np.asarray(decode_image(data)) == expected).all()


def test_draft_size_shrinks_big_jpegs_but_not_below_the_target() -> None:
    data = bad_images.jpeg(1024, 768)
    full = decode_image(data)
    assert full.size == (1024, 768)
    drafted = decode_image(data, draft_size=200)
    assert drafted.width < 1024
    assert drafted.height < 768
    assert drafted.width >= 200
    assert drafted.height >= 200
    # No effect on other formats, and orientation still applies to drafted JPEGs.
    assert decode_image(bad_images.bmp(), draft_size=4).size == (32, 16)
    assert decode_image(bad_images.exif_rotated_jpeg(), draft_size=8).size == (8, 16)


def test_draft_size_does_not_relax_the_pixel_limit() -> None:
    data = bad_images.jpeg(1024, 768)
    with pytest.raises(errors.ImageTooLarge, match="1024x768"):
        decode_image(data, DecodeLimits(max_pixels=500_000), draft_size=64)


def test_concurrent_decoding_matches_serial() -> None:
    payloads = [factory() for name, factory, *_ in CASES if name != "oversized"]

    def outcome(data: bytes) -> object:
        try:
            return np.asarray(decode_image(data)).tobytes()
        except errors.BadInput as exc:
            return exc.code

    serial = [outcome(data) for data in payloads]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            assert list(pool.map(outcome, payloads)) == serial


# --- sniff_format and to_rgb directly --------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (bad_images.jpeg, "JPEG"),
        (bad_images.mpo, "JPEG"),
        (bad_images.one_by_one, "PNG"),
        (bad_images.animated_gif, "GIF"),
        (bad_images.bmp, "BMP"),
        (bad_images.tiff, "TIFF"),
        (bad_images.webp, "WEBP"),
        (bad_images.text_named_jpg, None),
        (bad_images.pdf, None),
        (bad_images.svg, None),
        (bad_images.empty, None),
    ],
)
def test_sniff_format(factory: Callable[[], bytes], expected: str | None) -> None:
    if factory is bad_images.webp and not bad_images.HAS_WEBP:
        pytest.skip("Pillow built without WebP")
    assert sniff_format(factory()) == expected


def test_allowed_formats() -> None:
    assert {"JPEG", "PNG", "GIF", "BMP", "TIFF", "MPO"} <= ALLOWED_FORMATS
    assert ("WEBP" in ALLOWED_FORMATS) == bad_images.HAS_WEBP


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("1", 1, (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 0), (255, 255, 255)),
        ("La", (77, 255), (77, 77, 77)),
        ("PA", (0, 0), (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBa", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBX", (10, 20, 30, 0), (10, 20, 30)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("I;16", 65_535, (255, 255, 255)),
        ("I;16B", 32_896, (128, 128, 128)),
        ("I", 65_535, (255, 255, 255)),
        ("F", 0.5, (128, 128, 128)),
    ],
)
def test_to_rgb_modes(
    mode: str, colour: float | tuple[int, ...], expected: tuple[int, ...]
) -> None:
    out = to_rgb(Image.new(mode, (4, 4), colour))
    assert out.mode == "RGB"
    assert _close(_pixel(out, (0, 0)), expected, tol=1)


def test_to_rgb_wide_modes_without_a_canonical_range_are_stretched() -> None:
    arr = np.array([[-1000, 0, 1000, 100_000]], dtype=np.int32)
    out = np.asarray(to_rgb(Image.fromarray(arr)))
    assert out[0, 0, 0] == 0
    assert out[0, -1, 0] == 255
    floats = np.array([[np.nan, -5.0, 5.0, np.inf]], dtype=np.float32)
    assert np.asarray(to_rgb(Image.fromarray(floats))).shape == (1, 4, 3)


def test_to_rgb_colour_key_transparency() -> None:
    for mode, key in (("L", 7), ("RGB", (1, 2, 3)), ("I;16", 300)):
        img = Image.new(mode, (4, 4), key)
        img.info["transparency"] = key
        assert _pixel(to_rgb(img), (0, 0)) == (255, 255, 255), mode


def test_to_rgb_returns_rgb_input_unchanged() -> None:
    img = Image.new("RGB", (4, 4), RED)
    assert to_rgb(img) is img


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
