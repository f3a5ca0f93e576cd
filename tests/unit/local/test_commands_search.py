"""`simsearch search`: what it refuses before sending anything (exit 2, one line).

The router is a bare listening socket here, so "nothing was sent" is checked as "nothing
connected"; the searches themselves, with a key from `SIMSEARCH_API_KEY`, a collection
and a filter, run against a real router in tests/integration/router/test_client.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from simsearch.cli import build_parser, main


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A loopback socket that accepts nothing by itself: a connection would queue."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--filter", '{"field": "label"'], "--filter is not JSON"),
        (["--filter", "tulips"], "--filter is not JSON"),
        (["--filter", '{"field": "label"}'], "--filter is not a filter: a filter is an object"),
        (["--filter", '["label"]'], "--filter is not a filter"),
        (["--filter", '{"field": "label", "in": []}'], "--filter is not a filter"),
        (["--collection", "Flowers"], "invalid collection name 'Flowers'"),
        (["--collection", "../admin"], "invalid collection name"),
    ],
)
def test_a_bad_filter_or_collection_exits_2_before_any_request(
    listener: tuple[socket.socket, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    says: str,
) -> None:
    sock, url = listener
    image = tmp_path / "q.jpg"
    image.write_bytes(b"\xff\xd8not really")
    assert main(["search", str(image), "--url", url, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("simsearch search: ") and says in err and err.count("\n") == 1
    assert not connected(sock)


def test_a_missing_image_exits_2_before_any_request(
    listener: tuple[socket.socket, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock, url = listener
    assert main(["search", str(tmp_path / "none.jpg"), "--url", url]) == 2
    assert "No such file" in capsys.readouterr().err and not connected(sock)


def test_the_search_flags_parse() -> None:
    args = build_parser().parse_args(
        ["search", "q.jpg", "--collection", "flowers", "--filter", "{}", "--api-key", "k"]
    )
    assert (args.collection, args.filter, args.api_key, args.k) == ("flowers", "{}", "k", 10)
    plain = build_parser().parse_args(["search", "q.jpg"])
    assert (plain.collection, plain.filter, plain.api_key) == (None, None, None)
