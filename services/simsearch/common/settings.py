"""Typed configuration from `SIMSEARCH_*` environment variables, validated at start-up.

Every service has one settings class (a subclass of `ServiceSettings`) that is built in
the app factory, never at import time. `load_settings` turns pydantic's validation
errors into one `ConfigError` whose message names the environment variable, the bad
value and what is allowed, so a pod that is misconfigured dies at once with a line an
operator can act on instead of failing on the first request.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from simsearch.common.edge import EdgeLimits
from simsearch.common.errors import ConfigError
from simsearch.common.storage import S3Options

ENV_PREFIX = "SIMSEARCH_"

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    """Settings every service shares: where to listen, how to log, how to reach S3."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 in a container.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = Field("json", description="json for machines.")
    s3_endpoint_url: str | None = Field(None, description="MinIO/S3 endpoint; unset = AWS.")
    s3_region: str = "us-east-1"
    s3_path_style: bool = True
    s3_max_attempts: int = Field(5, ge=1, le=20)
    s3_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    s3_read_timeout_s: float = Field(30.0, gt=0, le=3600)
    # the HTTP edge (common/edge.py): what one client connection may cost the service
    http_max_head_bytes: int = Field(
        32 * 1024, ge=1024, le=1024 * 1024, description="Request line + headers; over it: 431."
    )
    http_head_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Connection start (or last answer) to end of headers."
    )
    http_body_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="End of headers to end of body (uploads)."
    )
    http_keepalive_s: int = Field(5, ge=1, le=600, description="Idle keep-alive lifetime (s).")
    http_limit_concurrency: int = Field(
        512, ge=8, le=100_000, description="Open connections + requests before new ones get 503."
    )

    def edge_limits(self) -> EdgeLimits:
        """The per-connection limits of `common.edge` these settings describe."""
        return EdgeLimits(
            max_head_bytes=self.http_max_head_bytes,
            head_timeout_s=self.http_head_timeout_s,
            body_timeout_s=self.http_body_timeout_s,
        )

    def s3_options(self) -> S3Options:
        """The S3 client options these settings describe (credentials stay in the env)."""
        return S3Options(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            path_style=self.s3_path_style,
            max_attempts=self.s3_max_attempts,
            connect_timeout_s=self.s3_connect_timeout_s,
            read_timeout_s=self.s3_read_timeout_s,
        )


def env_name(field: str) -> str:
    """The environment variable that sets `field` (what an operator has to change)."""
    return f"{ENV_PREFIX}{field.upper()}"


def describe_validation_error(err: ValidationError) -> str:
    """One line per bad setting, each naming its environment variable and the problem."""
    lines = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "?"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        # A check across settings (a model validator) has no field: its message names them.
        where = f"{env_name(field)}: " if item["loc"] else ""
        lines.append(f"{where}{item['msg']}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build `cls` from the environment plus explicit overrides (CLI flags win).

    Overrides that are None are dropped so that an unset CLI flag never hides the
    environment variable of the same name.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return cls(**given)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err)) from err
