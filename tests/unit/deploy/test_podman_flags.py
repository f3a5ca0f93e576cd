"""The image test's translation of the chart's securityContext into podman flags.

It must cover every key the chart sets (an unknown one is refused, so a chart change the
translation would drop cannot pass the image test unnoticed) and give a pod's restrictions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helm import SCENARIOS, WORKLOADS, render, role_container
from tests.support.podman import security_flags, volume_flags


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
@pytest.mark.parametrize("role", sorted(WORKLOADS))
def test_every_roles_security_context_becomes_the_restricting_flags(
    role: str, scenario: Path
) -> None:
    flags = security_flags(role_container(role, render(str(scenario)))["securityContext"])
    for expected in ("--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL"):
        assert expected in flags, f"{role}: {flags}"
    assert flags[flags.index("--user") + 1] == "10001:10001"
    assert flags[flags.index("--security-opt") + 1] == "no-new-privileges"


@pytest.mark.parametrize(
    "context",
    [{"privileged": True}, {"seccompProfile": {"type": "Unconfined"}}, {"runAsNonRoot": True}],
)
def test_what_has_no_translation_is_refused(context: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        security_flags(context)


def test_each_volume_mount_is_a_fresh_world_writable_folder(tmp_path: Path) -> None:
    mounts = [
        {"name": "cache", "mountPath": "/var/cache/simsearch"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    flags = volume_flags(mounts, tmp_path)
    assert flags == [
        "--mount", f"type=bind,src={tmp_path / 'cache'},dst=/var/cache/simsearch",
        "--mount", f"type=bind,src={tmp_path / 'tmp'},dst=/tmp",
    ]  # fmt: skip
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o777
