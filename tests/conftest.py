"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3server import moto_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of one real moto S3 server (a subprocess) shared by the session."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials in the environment, where boto3 looks for them.

    Profile, session-token and endpoint variables from the developer's shell are removed
    so a test can never pick up real credentials or talk to a real account.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
