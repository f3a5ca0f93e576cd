"""The router's search page in a real browser: headless Debian chromium driven by playwright.

A local cluster (`simsearch up`, one shard) indexes two collections: 42 sample photos of
three classes (the default collection) and 8 synthetic pictures drawn here with PIL
("shapes"); a second router on the same shards runs with SIMSEARCH_API_KEYS. The tests
upload photos through the page's file input and read what the page shows: the grid, the
scores, the completeness summary, the status panel, the error messages, the collection
picker (each collection answers with its own images only), and (with keys on) where the
key travels. What the browser needs comes from the project's own files: Debian's chromium
and the playwright package are installed by scripts/install-browser.sh (run by
`make tools`; run here if either is missing).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from simsearch.local.cluster import ClusterState
from simsearch.local.roles import router_env
from tests.support.paths import SAMPLE_IMAGES, SCRIPTS
from tests.support.procs import Service, start_service
from tests.support.procs import run_cli as simsearch
from tests.support.s3server import free_port_block

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request, Route

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = ("daisy", "roses", "sunflowers")
PER_CLASS = 14
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 60, 220),
    "gold": (240, 190, 20),
}
SHAPES = [f"{shape}-{colour}.png" for shape in ("disc", "bar") for colour in COLOURS]
KEY = "page-test-key-7c41e0"
SLOW_MS = 60_000  # an upload's embedding on a busy 2-core machine

# Every thumbnail the viewport shows has been decoded (lazy ones further down may not be).
VISIBLE_IMAGES_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#grid img')]
    .filter((img) => img.getBoundingClientRect().top < window.innerHeight);
  return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
}"""

# Drop a file on the drop zone or paste it into the page, as a user's browser would.
GIVE_FILE = """async ({url, name, event}) => {
  const blob = await (await fetch(url)).blob();
  const data = new DataTransfer();
  data.items.add(new File([blob], name, {type: blob.type}));
  const init = {bubbles: true, cancelable: true};
  if (event === 'drop') {
    const zone = document.getElementById('drop');
    zone.dispatchEvent(new DragEvent('dragover', {...init, dataTransfer: data}));
    zone.dispatchEvent(new DragEvent('drop', {...init, dataTransfer: data}));
  } else {
    document.body.dispatchEvent(new ClipboardEvent('paste', {...init, clipboardData: data}));
  }
}"""


@dataclass
class Cluster:
    url: str
    folder: Path
    images: Path
    shapes: Path
    state: ClusterState


def draw_shapes(folder: Path) -> None:
    """Eight pictures unlike any flower: a disc or a bar of one colour on white."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    for name in SHAPES:
        shape, colour = name.removesuffix(".png").split("-")
        picture = Image.new("RGB", (320, 240), "white")
        draw = ImageDraw.Draw(picture)
        box = (90, 50, 230, 190) if shape == "disc" else (40, 95, 280, 145)
        (draw.ellipse if shape == "disc" else draw.rectangle)(box, fill=COLOURS[colour])
        picture.save(folder / name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`simsearch up --shards 1`: 14 photos of each of three classes, and the shapes."""
    work = tmp_path_factory.mktemp("page")
    images = work / "images"
    for name in CLASSES:
        (images / name).mkdir(parents=True)
        for photo in sorted((SAMPLE_IMAGES / name).glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(photo, images / name / photo.name)
    shapes = work / "Shapes"  # an unnamed second --images: named after its folder
    draw_shapes(shapes)
    folder = work / "state"
    port = free_port_block()
    up = simsearch(
        "up",
        *("--images", str(images), "--images", str(shapes)),
        *("--shards", "1", "--partitions", "4"),
        *("--port", str(port), "--folder", str(folder)),
        cwd=work,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        state = ClusterState.load(folder)
        assert list(state.all_collections()) == ["default", "shapes"]
        yield Cluster(f"http://127.0.0.1:{port}", folder, images, shapes, state)
    finally:
        if (folder / "state.json").exists():
            down = simsearch("down", "--folder", str(folder), cwd=work)
            assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def keyed_router(cluster: Cluster) -> Iterator[Service]:
    """A second router over the same shards and embedder, with API keys on."""
    embedder = next(p for p in cluster.state.processes if p.role == "embedder")
    state = cluster.state
    env = router_env(state.store, state.router_images(), state.index, embedder.url, cluster.folder)
    with start_service("router", {**env, "SIMSEARCH_API_KEYS": f"other-key,{KEY}"}) as router:
        yield router


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium, installed by the project's script when it is missing."""
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        install = subprocess.run(
            ["bash", str(SCRIPTS / "install-browser.sh")],
            env={**os.environ, "VENV": sys.prefix},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert install.returncode == 0, install.stderr
        importlib.invalidate_caches()  # playwright may have been installed just now
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root otherwise
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


def console_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of `page`, collected as they happen."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    return errors


def failed_loads_only(errors: list[str], *statuses: int) -> list[str]:
    """Errors other than the browser's own 'Failed to load resource' for expected statuses."""
    expected = re.compile(rf"Failed to load resource: .*status of ({'|'.join(map(str, statuses))})")
    return [e for e in errors if not expected.search(e)]


def search_answer(url: str, photo: Path, k: int, collection: str = "") -> dict[str, Any]:
    """The API's own answer, to compare with the page (ids as exact Python ints)."""
    route = f"{url}/collections/{collection}/search/image" if collection else f"{url}/search/image"
    with photo.open("rb") as handle:
        response = httpx.post(route, params={"k": k}, files={"file": handle}, timeout=60)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def wait_for_grid(page: Page, first_path: str, count: int) -> None:
    from playwright.sync_api import expect

    grid = page.locator("#grid > li")
    expect(grid.first).to_have_attribute("data-path", first_path, timeout=SLOW_MS)
    expect(grid).to_have_count(count)
    expect(page.locator("#results")).to_have_attribute("data-state", "done")


def staged_error(status: int, code: str) -> Callable[[Route], None]:
    """A route handler answering what the router answers for that error."""

    def handler(route: Route) -> None:
        route.fulfill(status=status, json={"status": "error", "error": code, "detail": "staged"})

    return handler


def test_search_page_upload_more_like_this_and_errors(
    cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    k = 5
    photo = sorted((cluster.images / "roses").glob("*.jpg"))[2]
    key_path = f"roses/{photo.name}"
    api = search_answer(cluster.url, photo, k)
    stats = httpx.get(f"{cluster.url}/stats").json()

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = console_errors(page)
    page.goto(cluster.url + "/")

    # Status panel from /stats; no API key field on a router without keys.
    expect(page.locator("#st-images")).to_have_text(str(len(CLASSES) * PER_CLASS))
    expect(page.locator("#st-model")).to_contain_text(stats["model"])
    expect(page.locator("#st-version")).to_have_text(stats["index_version"])
    expect(page.locator("#st-partitions")).to_contain_text("4, coverage 100 %")
    expect(page.locator("#shards tr")).to_have_count(1)
    expect(page.locator("#shards tr").first).to_contain_text("shard-0")
    expect(page.locator("#shards tr").first).to_contain_text("0–3")
    expect(page.locator("#health")).to_contain_text("healthy")
    expect(page.locator("#key-box")).to_be_hidden()

    # Live recall from /stats' `recall` rows (staged: the monitor samples 1 % of queries,
    # so what the real router reports here depends on chance).
    def with_recall(drift: bool) -> Callable[[Route], None]:
        def handler(route: Route) -> None:
            body = route.fetch().json()
            row = {"collection": "default", "version": body["index_version"], "recall": 0.97,
                   "samples": 123, "window_s": 300, "baseline": 0.99, "drift": drift}  # fmt: skip
            other = {**row, "version": "v20000101T000000Z-000000", "recall": 0.1}
            route.fulfill(status=200, json={**body, "recall": [other, row]})

        return handler

    live = page.locator("#st-live-recall")
    page.route("**/stats", with_recall(drift=False))
    page.get_by_role("button", name="Refresh").click()
    expect(live).to_have_text("live recall@k 0.970 · 123 samples")
    page.unroute("**/stats")
    page.route("**/stats", with_recall(drift=True))
    page.get_by_role("button", name="Refresh").click()
    expect(live).to_contain_text("(below the build-time 0.990: drift)")
    expect(live).to_have_class(re.compile(r"\bwarn\b"))
    page.unroute("**/stats")

    # k, upload, grid: the photo itself first with score ≥ 0.99, exactly k results.
    page.get_by_label("Results (k)").fill(str(k))
    page.get_by_label("Query image").set_input_files(str(photo))
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#preview-img")).to_have_attribute("alt", f"Query image: {photo.name}")
    wait_for_grid(page, key_path, k)
    cards = page.locator("#grid > li")
    assert cards.first.locator(".path").inner_text() == key_path
    assert float(cards.first.locator(".score").inner_text()) >= 0.99
    assert cards.first.locator(".rank").inner_text() == "#1"
    # What the page shows is the API's answer; 63-bit ids survive as strings.
    assert [cards.nth(i).get_attribute("data-path") for i in range(k)] == [
        r["path"] for r in api["results"]
    ]
    assert [cards.nth(i).get_attribute("data-id") for i in range(k)] == [
        str(r["id"]) for r in api["results"]
    ]
    # Completeness, plainly.
    expect(page.locator("#sum-coverage")).to_have_text("100 %")
    expect(page.locator("#sum-partitions")).to_have_text("4 of 4 answered")
    expect(page.locator("#sum-version")).to_have_text(api["index_version"])
    expect(page.locator("#sum-took")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#partial")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    # Thumbnails: through /images/{id}, lazy, alt text = path, decoded.
    images = page.locator("#grid img")
    for i in range(k):
        img = images.nth(i)
        assert img.get_attribute("alt") == cards.nth(i).get_attribute("data-path")
        assert img.get_attribute("loading") == "lazy"
        src = f"collections/default/images/{api['results'][i]['id']}"  # the hit's own url
        assert img.get_attribute("src") == src
    page.wait_for_function(VISIBLE_IMAGES_LOADED, timeout=SLOW_MS)

    # Keyboard: Enter on a result opens the full image; Escape closes it, focus returns.
    cards.first.locator(".thumb").focus()
    page.keyboard.press("Enter")
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-title")).to_have_text(key_path)
    expect(page.locator("#viewer-img")).to_have_attribute("alt", key_path)
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(cards.first.locator(".thumb")).to_be_focused()
    assert errors == [], errors

    # "More like this" on the second result: it becomes the first of a new grid.
    second_path = cards.nth(1).get_attribute("data-path")
    second_id = cards.nth(1).get_attribute("data-id")
    assert second_path is not None and second_id is not None
    cards.nth(1).get_by_role("button", name=f"More like {second_path}").click()
    wait_for_grid(page, second_path, k)
    assert float(cards.first.locator(".score").inner_text()) >= 0.99
    expect(page.locator("#preview-caption")).to_have_text(f"Images like {second_path}")
    assert page.url.endswith(f"/?collection=default&similar={second_id}")
    new_paths = [cards.nth(i).get_attribute("data-path") for i in range(k)]
    assert new_paths != [r["path"] for r in api["results"]]

    # A partial answer (one shard's partitions missing) is flagged in a visible banner.
    def half_answered(route: Route) -> None:
        body = route.fetch().json()
        body.update(partial=True, coverage=0.5, partitions_answered=2)
        route.fulfill(status=200, json=body)

    page.route("**/search/similar/**", half_answered)
    cards.first.get_by_role("button", name=re.compile("^More like ")).click()
    partial = page.locator("#partial")
    expect(partial).to_be_visible()
    expect(partial).to_have_attribute("role", "alert")
    expect(partial).to_contain_text("Partial answer: only 2 of 4 partitions answered")
    expect(page.locator("#sum-coverage")).to_have_text("50 %")
    page.unroute("**/search/similar/**")
    assert errors == [], errors

    # Not an image: the router answers 415, the page says so in words.
    text = tmp_path / "notes.txt"
    text.write_text("these are not the pixels you are looking for\n")
    with page.expect_response("**/search/image**") as refused:
        page.get_by_label("Query image").set_input_files(str(text))
    assert refused.value.status == 415
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("That file is not an image this service can read")
    expect(page.locator("#grid > li")).to_have_count(0)
    expect(page.locator("#results")).to_have_attribute("data-state", "error")

    # Too large and not ready (answers the router gives; staged here) read as such. The
    # second one searches the chosen photo again with the Search button.
    page.route("**/search/image**", staged_error(413, "payload_too_large"))
    page.get_by_label("Query image").set_input_files(str(photo))
    expect(error).to_contain_text("The file is too large")
    page.unroute("**/search/image**")
    page.route("**/search/image**", staged_error(503, "unavailable"))
    page.get_by_role("button", name="Search", exact=True).click()
    expect(error).to_contain_text("The cluster is not ready")
    page.unroute("**/search/image**")
    assert failed_loads_only(errors, 413, 415, 503) == []
    context.close()


def test_search_page_on_a_phone_width_screen_drop_and_paste(
    cluster: Cluster, browser: Browser
) -> None:
    from playwright.sync_api import expect

    photo = sorted((cluster.images / "daisy").glob("*.jpg"))[0]
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    page = context.new_page()
    errors = console_errors(page)
    page.goto(cluster.url + "/")
    page.get_by_label("Query image").set_input_files(str(photo))
    wait_for_grid(page, f"daisy/{photo.name}", 12)
    columns = page.evaluate(
        "getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 2
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(page.get_by_role("button", name="Search", exact=True)).to_be_visible()

    # The other two ways in: drop a file on the drop zone, paste one into the page.
    cards = page.locator("#grid > li")
    for i, event in ((2, "drop"), (3, "paste")):
        path = cards.nth(i).get_attribute("data-path")
        image_id = cards.nth(i).get_attribute("data-id")
        page.evaluate(GIVE_FILE, {"url": f"images/{image_id}", "name": path, "event": event})
        wait_for_grid(page, str(path), 12)
        expect(page.locator("#preview-caption")).to_have_text(f"Query: {path}")
    assert errors == [], errors
    context.close()


def test_search_page_collection_picker_searches_each_collection(
    cluster: Cluster, browser: Browser
) -> None:
    from playwright.sync_api import expect

    flower = sorted((cluster.images / "roses").glob("*.jpg"))[5]
    shape = cluster.shapes / "disc-blue.png"
    listed = httpx.get(f"{cluster.url}/collections").json()
    assert listed["default"] == "default"
    assert {c["name"]: c["vectors"] for c in listed["collections"]} == {
        "default": len(CLASSES) * PER_CLASS,
        "shapes": len(SHAPES),
    }
    # The API itself: each collection answers with its own images only.
    in_shapes = search_answer(cluster.url, flower, 8, "shapes")["results"]
    assert sorted(r["path"] for r in in_shapes) == sorted(SHAPES)
    assert all(r["url"].startswith("/collections/shapes/images/") for r in in_shapes)

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = console_errors(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(cluster.url + "/")

    # Two collections: the picker shows both, the router's default chosen.
    picker = page.get_by_label("Collection")
    expect(picker).to_be_visible()
    expect(picker).to_have_value("default")
    assert picker.locator("option").all_inner_texts() == ["default (default)", "shapes"]
    expect(page.locator("#st-collection")).to_have_text("default")

    # A flower in the default collection: flowers only, through the collection route.
    page.get_by_label("Query image").set_input_files(str(flower))
    wait_for_grid(page, f"roses/{flower.name}", 12)
    paths = page.locator("#grid > li").evaluate_all("els => els.map(e => e.dataset.path)")
    assert all(path.split("/")[0] in CLASSES for path in paths), paths
    assert any("/collections/default/search/image" in url for url in requests)

    # Switching searches the same file in the other collection: shapes only, all 8.
    picker.select_option("shapes")
    grid = page.locator("#grid > li")
    expect(grid).to_have_count(len(SHAPES), timeout=SLOW_MS)
    expect(page.locator("#results")).to_have_attribute("data-state", "done")
    paths = grid.evaluate_all("els => els.map(e => e.dataset.path)")
    assert sorted(paths) == sorted(SHAPES)
    assert page.url.endswith("/?collection=shapes")
    expect(page.locator("#st-images")).to_have_text(str(len(SHAPES)))
    expect(page.locator("#st-collection")).to_have_text("shapes")
    first_src = page.locator("#grid img").first.get_attribute("src")
    assert first_src is not None and first_src.startswith("collections/shapes/images/")
    page.wait_for_function(VISIBLE_IMAGES_LOADED, timeout=SLOW_MS)

    # A shape searched in the shapes collection comes back first; "More like this" stays
    # in that collection and the address says so (a reload shows the same).
    page.get_by_label("Results (k)").fill("4")
    page.get_by_label("Query image").set_input_files(str(shape))
    wait_for_grid(page, shape.name, 4)
    bar = grid.nth(1).get_attribute("data-path")
    bar_id = grid.nth(1).get_attribute("data-id")
    assert bar in SHAPES and bar_id is not None
    grid.nth(1).get_by_role("button", name=f"More like {bar}").click()
    wait_for_grid(page, bar, 4)
    assert any(f"/collections/shapes/search/similar/{bar_id}" in url for url in requests)
    assert page.url.endswith(f"/?collection=shapes&similar={bar_id}")
    page.reload()
    expect(picker).to_have_value("shapes")
    expect(grid.first).to_have_attribute("data-path", bar, timeout=SLOW_MS)
    expect(page.locator("#results")).to_have_attribute("data-state", "done")
    assert set(grid.evaluate_all("els => els.map(e => e.dataset.path)")) <= set(SHAPES)

    # Back to the default: an id of the shapes collection means nothing there, so the
    # page starts over instead of searching it; a new upload searches the flowers.
    picker.select_option("default")
    expect(grid).to_have_count(0)
    expect(page.locator("#message")).to_contain_text("choose an image")
    assert page.url.endswith("/?collection=default")
    page.get_by_label("Query image").set_input_files(str(flower))
    wait_for_grid(page, f"roses/{flower.name}", 12)
    assert errors == [], errors
    context.close()


def test_search_page_with_api_keys(
    cluster: Cluster, keyed_router: Service, browser: Browser
) -> None:
    from playwright.sync_api import expect

    photo = sorted((cluster.images / "sunflowers").glob("*.jpg"))[4]
    key_path = f"sunflowers/{photo.name}"
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = console_errors(page)
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(keyed_router.url + "/")

    # The page knows this router needs a key; a search without one says so.
    key_field = page.get_by_label("API key")
    expect(page.locator("#key-box")).to_be_visible()
    page.get_by_label("Query image").set_input_files(str(photo))
    expect(page.locator("#error")).to_contain_text("This router needs an API key")
    expect(key_field).to_be_focused()

    key_field.fill(KEY)
    page.get_by_role("button", name="Search", exact=True).click()
    wait_for_grid(page, key_path, 12)
    assert float(page.locator("#grid .score").first.inner_text()) >= 0.99
    # Thumbnails came through fetch() with the header, shown from blob: URLs.
    page.wait_for_function(VISIBLE_IMAGES_LOADED, timeout=SLOW_MS)
    first_src = page.locator("#grid img").first.get_attribute("src")
    assert first_src is not None and first_src.startswith("blob:")
    page.locator("#grid .thumb").first.click()
    expect(page.locator("#viewer-img")).to_have_attribute("src", re.compile("^blob:"))
    page.get_by_role("button", name="Close").click()

    cards = page.locator("#grid > li")
    second_path = cards.nth(1).get_attribute("data-path")
    assert second_path is not None
    cards.nth(1).get_by_role("button", name=f"More like {second_path}").click()
    wait_for_grid(page, second_path, 12)
    page.wait_for_function(VISIBLE_IMAGES_LOADED, timeout=SLOW_MS)

    # The key is in the X-API-Key header of every API call after it was typed, never in a URL.
    api = [r for r in requests if re.search(r"/(search|images)/", r.url)]
    keyed = [r for r in api if r.all_headers().get("x-api-key") == KEY]
    assert len(keyed) == len(api) - 1  # all but the first, refused upload
    assert any("/images/" in r.url for r in keyed) and any("/similar/" in r.url for r in keyed)
    assert all(KEY not in r.url for r in requests)
    assert KEY not in page.url
    # Memory only unless "remember" is ticked; then sessionStorage (not localStorage).
    stored = page.evaluate("JSON.stringify([{...sessionStorage}, {...localStorage}])")
    assert KEY not in stored
    page.get_by_label("Remember in this tab").check()
    assert json.loads(page.evaluate("JSON.stringify({...sessionStorage})")) == {
        "simsearch.apiKey": KEY
    }
    page.reload()
    expect(key_field).to_have_value(KEY)
    page.get_by_label("Remember in this tab").uncheck()
    assert page.evaluate("sessionStorage.length") == 0
    assert context.cookies() == []
    assert failed_loads_only(errors, 401) == []
    context.close()
