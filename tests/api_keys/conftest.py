"""An administrator and their bearer headers, for the API-key API tests."""

from __future__ import annotations

import pytest

from reviewpoint.config import Settings
from tests.data import bearer_headers, insert_user


@pytest.fixture
def admin_id(db_url: str) -> int:
    return insert_user(db_url, "admin@example.com", is_admin=True)


@pytest.fixture
def admin(settings: Settings, admin_id: int) -> dict[str, str]:
    return bearer_headers(settings, admin_id)
