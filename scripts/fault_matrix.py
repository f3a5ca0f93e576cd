"""Run the fault matrix (tests/integration/cluster/test_faults.py) and print its figures.

    python scripts/fault_matrix.py [--json out.json]

Runs the integration tests with `SIMSEARCH_FAULT_REPORT` pointing at a JSON file (each
test writes its fault's figures there), then prints one Markdown row per fault: requests
sent, failed (of which connection errors), flagged partial, wrong, recovery seconds and
p99 — the table docs/reliability.md quotes. Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("sent", "failed", "failed_connection", "partial", "wrong", "recovery_s", "p99_ms")


def run(report: Path) -> int:
    """pytest on the fault file, from the repository root, with the report path set."""
    env = {**os.environ, "SIMSEARCH_FAULT_REPORT": str(report)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "services"), str(ROOT)])
    test = "tests/integration/cluster/test_faults.py"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def table(figures: dict[str, dict[str, object]]) -> str:
    """The figures as a Markdown table, one row per fault."""
    lines = ["| fault | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in figures.items():
        cells = ["—" if row.get(c) is None else str(row[c]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="keep the figures here (default: a temp file)")
    args = parser.parse_args()
    report = args.json or Path(tempfile.mkdtemp(prefix="faults-")) / "faults.json"
    report.unlink(missing_ok=True)
    status = run(report)
    if report.is_file():
        print(table(json.loads(report.read_text())))
    return status


if __name__ == "__main__":
    sys.exit(main())
