"""Real stores for admission tests: process memory and the machine's Redis.

Every test gets its own key prefix and its Redis keys are deleted afterwards,
so runs (and engineers sharing one Redis) never see each other's budgets.
Set `REVIEWPOINT_TEST_REDIS_URL` to use another Redis than the local one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.admission.stores import REDIS_URL, delete_keys


@pytest.fixture
def key_prefix() -> Iterator[str]:
    prefix = f"rvp-test-{uuid.uuid4().hex}"
    yield prefix
    asyncio.run(delete_keys(f"{prefix}*"))


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each store the admission package supports."""
    return "memory://" if request.param == "memory" else REDIS_URL
