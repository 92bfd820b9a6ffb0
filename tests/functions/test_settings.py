"""Configuration read once from the environment (AGENTFN_*, PORT)."""

from __future__ import annotations

import pytest
from agentfn.functions import Settings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("AGENTFN_") or name == "PORT":
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 8080
    assert settings.redis_url is None
    assert settings.broker_url is None
    assert settings.idempotency_backend == "embedded"
    assert settings.idempotency_ttl_s == 86_400
    assert (settings.breaker_failures, settings.breaker_window_s, settings.breaker_reset_s) == (
        5,
        60,
        30,
    )


def test_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("AGENTFN_REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("AGENTFN_BROKER_URL", "http://broker/default/default")
    monkeypatch.setenv("AGENTFN_IDEMPOTENCY_TTL_S", "60")
    monkeypatch.setenv("AGENTFN_BREAKER_FAILURES", "3")
    monkeypatch.setenv("AGENTFN_BREAKER_SHARED", "true")
    settings = Settings()
    assert settings.port == 9090
    assert settings.idempotency_backend == "redis"  # auto: Redis when a URL is set
    assert settings.broker_url == "http://broker/default/default"
    assert settings.idempotency_ttl_s == 60
    assert settings.breaker_failures == 3
    assert settings.breaker_shared


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFN_IDEMPOTENCY", "off")
    assert Settings().idempotency_backend == "off"
    assert Settings(idempotency="embedded", port=7000).idempotency_backend == "embedded"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTFN_BREAKER_FAILURES", "0"),
        ("AGENTFN_IDEMPOTENCY_TTL_S", "-1"),
        ("AGENTFN_IDEMPOTENCY", "sometimes"),
        ("PORT", "70000"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_redis_features_need_a_redis_url() -> None:
    with pytest.raises(ValidationError, match="AGENTFN_REDIS_URL"):
        Settings(idempotency="redis")
    with pytest.raises(ValidationError, match="AGENTFN_REDIS_URL"):
        Settings(breaker_shared=True)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_the_agent_body_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_body_bytes == 32 * 1024 * 1024
    monkeypatch.setenv("AGENTFN_MAX_BODY_BYTES", "65536")
    assert Settings().max_body_bytes == 65536
    monkeypatch.setenv("AGENTFN_MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError, match="max_body_bytes"):
        Settings()
