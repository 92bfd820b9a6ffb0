from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._model_server import ModelServer, start_model_server
from tests._servers import RedisServer, redis_server

SHARED_SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "spec"


@pytest.fixture(scope="session")
def shared_spec() -> Path:
    """``../shared/spec`` beside the project; tests that need it skip where it is absent."""
    if not SHARED_SPEC.is_dir():
        pytest.skip(
            f"reference data not found at {SHARED_SPEC} (../shared/spec beside the project)"
        )
    return SHARED_SPEC


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One real Redis for the session (REDIS_URL or a redis-server on a free port)."""
    import os

    if not os.environ.get("REDIS_URL") and shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed and REDIS_URL is not set; `make test` installs it"
        )
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_private() -> Iterator[RedisServer]:
    """A Redis of this test alone, which the test may stop and start (outage tests)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed; `make test` installs it")
    import os

    saved = os.environ.pop("REDIS_URL", None)
    try:
        with redis_server() as server:
            yield server
    finally:
        if saved is not None:
            os.environ["REDIS_URL"] = saved


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    """One real ``agentfn model serve`` for the whole session (http_url, grpc_target, model)."""
    import importlib.util

    missing = [
        m for m in ("kserve", "torch", "sentence_transformers") if not importlib.util.find_spec(m)
    ]
    if missing:
        pytest.fail(f"{missing} not installed: pip install -e '.[inference]' (`make test` does)")
    with start_model_server() as server:
        yield server


#: The folders that install as agentfn.*: under their bare names they are a second, separate
#: copy of every module (and in a user's environment, someone else's package).
_BARE_NAMES = ("events", "brokers", "functions", "inference")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything imported one of our folders by its bare name.

    The repository root is on ``sys.path`` for the ``tests`` package, so ``import events``
    would quietly work here and nowhere else; ruff bans it in code, this catches the rest
    (strings handed to importlib, examples executed from the README).
    """
    import sys

    root = str(Path(__file__).resolve().parents[1])
    bare = sorted(
        name
        for name in _BARE_NAMES
        if str(getattr(sys.modules.get(name), "__file__", "") or "").startswith(root)
    )
    if bare:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        sys.stderr.write(f"\nimported by their bare names, not as agentfn.*: {bare}\n")
