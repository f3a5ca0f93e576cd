"""`router/page.py` and the static page: what it serves, and the rules the page keeps.

The page's behaviour is tested in a real browser (tests/integration/router/
test_page_browser.py); here, without one: the assets served, the CSP header, and that the
script builds every piece of untrusted text (paths, collection names) as text, never HTML.
"""

from __future__ import annotations

import re

import pytest

from simsearch.common.errors import NotFound
from simsearch.router.page import CSP, PAGE_HEADERS, asset, render_page


def test_the_page_marks_whether_a_key_is_needed() -> None:
    assert 'data-api-key="optional"' in render_page(needs_key=False)
    assert 'data-api-key="required"' in render_page(needs_key=True)


def test_only_the_listed_assets_are_served() -> None:
    js, media_type = asset("app.js")
    assert media_type.startswith("text/javascript") and js
    with pytest.raises(NotFound):
        asset("../page.py")


def test_the_csp_allows_no_inline_script_and_no_other_origin() -> None:
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    assert "connect-src 'self'" in CSP
    assert PAGE_HEADERS["Content-Security-Policy"] == CSP
    html = render_page(needs_key=False)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script
    assert not re.search(r"\son[a-z]+=", html)  # no inline handlers


def test_the_collection_picker_is_hidden_until_there_are_several() -> None:
    html = render_page(needs_key=False)
    assert re.search(r'<div id="collection-box"[^>]*\bhidden\b', html)
    assert '<label for="collection">Collection</label>' in html
    assert '<select id="collection"' in html


def test_the_script_writes_text_not_html_and_calls_the_collection_routes() -> None:
    js = asset("app.js")[0].decode()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)
    assert "fetch('collections'" in js  # relative: works behind a path prefix
    assert "collections/${encodeURIComponent(collection)}/" in js
