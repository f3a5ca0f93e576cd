"""`simsearch up / scale / status / down`: the local cluster a user starts with `make demo`."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import run_cli as cli
from tests.support.procs import wait_for
from tests.support.s3server import free_port_block

pytestmark = pytest.mark.integration


def test_up_search_scale_down(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for photo in sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[::20]:
        (images / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, images / photo.parent.name / photo.name)
    port = free_port_block()
    up = cli(
        "up",
        "--images",
        str(images),
        "--shards",
        "2",
        "--port",
        str(port),
        "--partitions",
        "8",
        cwd=tmp_path,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        url = f"http://127.0.0.1:{port}"
        assert url in up.stdout
        assert "<title>simsearch</title>" in httpx.get(url).text
        photo = sorted(images.glob("*/*.jpg"))[3]
        found = cli("search", str(photo), "--url", url, "-k", "3", cwd=tmp_path, timeout_s=120)
        assert found.returncode == 0, found.stdout + found.stderr  # through simsearch.client
        body = json.loads(found.stdout)
        assert len(body["results"]) == 3 and body["coverage"] == 1.0
        assert body["results"][0]["path"] == f"{photo.parent.name}/{photo.name}"
        assert body["results"][0]["similarity_score"] >= 0.99

        # the supervisor starts a crashed role again (Kubernetes' job in the chart)
        state = json.loads((tmp_path / ".simsearch" / "state.json").read_text())
        pids = {p["role"]: p["pid"] for p in state["processes"]}
        for role in ("embedder", "shard-1"):
            os.kill(pids[role], signal.SIGKILL)
        wait_for(lambda: cli("status", cwd=tmp_path).stdout.count("restarts 1") == 2, 90)
        wait_for(lambda: httpx.get(f"{url}/health").json()["status"] == "healthy", 90)
        with photo.open("rb") as handle:
            again = httpx.post(f"{url}/search/image", files={"file": handle}, timeout=60)
        assert again.status_code == 200 and again.json()["coverage"] == 1.0

        assert cli("scale", "3", cwd=tmp_path).returncode == 0
        wait_for(lambda: httpx.get(f"{url}/health").json()["shards"]["total"] == 3)
        assert cli("scale", "1", cwd=tmp_path).returncode == 0
        wait_for(lambda: httpx.get(f"{url}/health").json()["status"] == "healthy")
        assert "shard-0" in cli("status", cwd=tmp_path).stdout
    finally:
        down = cli("down", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    nobody = cli("search", str(photo), "--url", url, cwd=tmp_path, timeout_s=60)
    assert nobody.returncode == 1 and "no answer" in nobody.stderr, nobody.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
