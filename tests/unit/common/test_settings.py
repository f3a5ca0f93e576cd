"""Wire encodings round-trip exactly; settings refuse bad values naming the variable."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest

from simsearch.common.errors import ConfigError, InvalidVector
from simsearch.common.settings import load_settings
from simsearch.common.telemetry import JsonFormatter, request_id_var
from simsearch.common.wire import decode_vectors, encode_vectors
from simsearch.embedder.settings import EmbedderSettings


def test_base64_vectors_round_trip_bit_exact() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 7)).astype(np.float32)
    assert np.array_equal(decode_vectors(encode_vectors(vectors), 7), vectors)


@pytest.mark.parametrize("payload", ["not base64!", base64.b64encode(b"\0" * 12).decode()])
def test_bad_vector_payloads_are_refused(payload: str) -> None:
    with pytest.raises(InvalidVector):
        decode_vectors(payload, 7)


def test_settings_errors_name_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_MAX_BATCH", "0")
    monkeypatch.setenv("SIMSEARCH_DEVICE", "tpu")
    with pytest.raises(ConfigError) as caught:
        load_settings(EmbedderSettings, model="vgg-nope")
    message = caught.value.reason
    for name in ("SIMSEARCH_MAX_BATCH", "SIMSEARCH_DEVICE", "SIMSEARCH_MODEL"):
        assert name in message
    assert "efficientnet-lite0" in message


def test_flags_override_env_and_unset_flags_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_PORT", "9100")
    monkeypatch.setenv("SIMSEARCH_MAX_BATCH", "16")
    settings = load_settings(EmbedderSettings, port=None, max_batch=4)
    assert settings.port == 9100
    assert settings.max_batch == 4


def test_request_body_limit_must_fit_one_image() -> None:
    with pytest.raises(ConfigError, match="SIMSEARCH_MAX_REQUEST_BYTES"):
        load_settings(EmbedderSettings, max_request_bytes=2048, max_image_bytes=4096)


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "hello %s",
            "args": ("world",),
            "levelno": 20,
            "levelname": "INFO",
            "name": "t",
            "route": "/embed",
        }
    )
    token = request_id_var.set("abc123")
    try:
        line = json.loads(JsonFormatter("embedder").format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello world"
    assert line["request_id"] == "abc123"
    assert line["route"] == "/embed"
    assert line["service"] == "embedder"
