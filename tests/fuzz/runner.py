"""Run schemathesis (its CLI, every check) against one running service and read the result.

Shared by `tests/integration/cluster/test_fuzz.py` (a bounded pass inside `make test`) and
`scripts/fuzz.sh` (a longer one). The CLI is the tool as an outside prober runs it; its
JSON report gives the failures and generated cases, and the service's own
`simsearch_http_requests_total` counter gives how many requests it really received
(checks such as `unsupported_method` send requests of their own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.paths import FUZZ

CONFIG = FUZZ / "schemathesis.toml"
HOOKS = FUZZ / "hooks.py"


@dataclass
class FuzzResult:
    """What one schemathesis run against one service found."""

    service: str
    returncode: int
    seconds: float
    generated: int  # test cases schemathesis generated
    requests: int  # requests the service received (its own counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    output: str = ""

    def summary(self) -> str:
        return (
            f"{self.service}: {self.requests} requests, {self.generated} test cases, "
            f"{len(self.failures)} failures, {len(self.errors)} errors in {self.seconds:.1f}s"
        )


def served_requests(base_url: str) -> int:
    """The service's total of `simsearch_http_requests_total` (every route and status)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("simsearch_http_requests_total{")
        )
    )


def run_schemathesis(
    service: str,
    base_url: str,
    report_dir: Path,
    max_examples: int,
    seed: int | None,
    timeout_s: float,
) -> FuzzResult:
    """`st run BASE/openapi.json --checks all -n MAX` with our config and hooks."""
    report_dir.mkdir(parents=True, exist_ok=True)
    report = report_dir / f"{service}.json"
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file", str(CONFIG),
        "--no-color",
        "run", f"{base_url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(max_examples),
        "--workers", "1",  # hypothesis' lambda-source cache is not thread-safe (flaky errors)
        "--continue-on-failure",
        "--report", "json",
        "--report-json-path", str(report),
        "--request-timeout", "60",
    ]  # fmt: skip
    if seed is not None:
        command += ["--seed", str(seed)]
    before = served_requests(base_url)
    started = time.monotonic()
    done = subprocess.run(
        command,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        cwd=report_dir,  # its crash cache (.schemathesis/) goes there, not into the checkout
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    seconds = time.monotonic() - started
    requests = served_requests(base_url) - before - 1  # not the first /metrics call
    data = json.loads(report.read_text()) if report.exists() else {}
    return FuzzResult(
        service=service,
        returncode=done.returncode,
        seconds=seconds,
        generated=int(data.get("test_cases", {}).get("generated", 0)),
        requests=requests,
        failures=list(data.get("failures", [])),
        errors=list(data.get("errors", [])),
        output=done.stdout[-20_000:] + done.stderr[-5_000:],
    )
