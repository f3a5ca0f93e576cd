"""Screenshots of the search page with results, for the README (docs/img/page*.png).

    .venv/bin/python scripts/screenshot_page.py                # starts its own local cluster
    .venv/bin/python scripts/screenshot_page.py --url http://127.0.0.1:8000   # `make demo`

Without --url it runs `simsearch up` on the bundled photos (or --images) in a temporary
folder on a free port and stops it afterwards. It then opens the router's page in
headless Debian chromium (scripts/install-browser.sh) through playwright, uploads --photo
and, once the result grid and its visible thumbnails are loaded, writes a desktop
(1200×900) and a phone-width (390×844) screenshot.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "flowers" / "images"
DEFAULT_PHOTO = SAMPLES / "sunflowers" / "1008566138_6927679c8a.jpg"
CHROMIUM = Path("/usr/bin/chromium")

# Every thumbnail inside the viewport has been decoded (lazy ones further down may not be).
VISIBLE_IMAGES_LOADED = """() => [...document.querySelectorAll('#grid img')]
  .filter((img) => img.getBoundingClientRect().top < window.innerHeight)
  .every((img) => img.complete && img.naturalWidth > 0)"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def simsearch(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "simsearch.cli", *args], cwd=cwd, check=True, timeout=900)


@contextmanager
def local_cluster(images: Path, shards: int) -> Iterator[str]:
    """`simsearch up` in a temporary folder; yields the router URL, `down` on the way out."""
    with tempfile.TemporaryDirectory(prefix="simsearch-screenshot-") as tmp:
        folder = Path(tmp)
        port = free_port()
        try:
            simsearch(
                "up",
                "--images",
                str(images),
                "--shards",
                str(shards),
                "--port",
                str(port),
                "--folder",
                str(folder / "state"),
                cwd=folder,
            )
            yield f"http://127.0.0.1:{port}"
        finally:
            if (folder / "state" / "state.json").exists():
                simsearch("down", "--folder", str(folder / "state"), cwd=folder)


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    """The status panel should show a healthy cluster: wait for /health to say so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("status") == "healthy":
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} is not healthy after {timeout_s:.0f}s")


def search(page: Page, url: str, photo: Path, k: int) -> None:
    page.goto(url + "/")
    expect(page.locator("#st-images")).not_to_have_text("–")
    page.fill("#k", str(k))
    page.set_input_files("#file", str(photo))
    expect(page.locator("#results")).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.locator("#grid > li")).to_have_count(k)
    page.wait_for_function(VISIBLE_IMAGES_LOADED, timeout=30_000)


def shoot(url: str, photo: Path, out: Path, k: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            for name, viewport in (
                ("page.png", {"width": 1200, "height": 900}),
                ("page-phone.png", {"width": 390, "height": 844}),
            ):
                context = browser.new_context(viewport=viewport, device_scale_factor=1)
                page = context.new_page()
                search(page, url, photo, k)
                page.evaluate("document.activeElement && document.activeElement.blur()")
                if viewport["width"] < 500:  # on a phone the results are below the form
                    page.locator("#results").scroll_into_view_if_needed()
                    page.wait_for_function(VISIBLE_IMAGES_LOADED, timeout=30_000)
                path = out / name
                page.screenshot(path=str(path))
                written.append(path)
                context.close()
        finally:
            browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running router (default: start a local cluster)")
    parser.add_argument("--images", type=Path, default=SAMPLES, help="photos to index")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="the query photo")
    parser.add_argument("-k", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        parser.error(f"no {CHROMIUM}: run scripts/install-browser.sh")
    if args.url:
        url = args.url.rstrip("/")
        wait_healthy(url)
        written = shoot(url, args.photo, args.out, args.k)
    else:
        with local_cluster(args.images.resolve(), args.shards) as url:
            wait_healthy(url)
            written = shoot(url, args.photo, args.out, args.k)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
