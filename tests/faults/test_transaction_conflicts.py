"""A transaction PostgreSQL rolls back to settle a conflict (deadlock, serialization
failure) is transient: 503 with `Retry-After`, never a 500, and the retry works.

A trigger makes the real server raise the real SQLSTATE on demand: a genuine
deadlock between a request and the test would need the request to take one lock,
then wait for another at a moment the test controls.
"""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS
from tests.data import execute_sql, insert_user
from tests.faults.calls import assert_retry_later, live_server_on

CONFLICT_ON_RENAME = """
CREATE FUNCTION conflict_on_rename() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name IN ('40001', '40P01') THEN
        RAISE EXCEPTION 'conflict raised by the test' USING ERRCODE = NEW.name;
    END IF;
    RETURN NEW;
END $$
"""


@pytest.mark.parametrize(
    "db_url", [name for name in BACKENDS if name == "postgresql"], indirect=True
)
@pytest.mark.parametrize(
    "sqlstate", ["40001", "40P01"], ids=["serialization-failure", "deadlock-detected"]
)
def test_a_transaction_rolled_back_for_a_conflict_is_503_with_retry_after(
    db_url: str, sqlstate: str
) -> None:
    execute_sql(db_url, CONFLICT_ON_RENAME)
    execute_sql(
        db_url,
        "CREATE TRIGGER conflict BEFORE UPDATE ON users "
        "FOR EACH ROW EXECUTE FUNCTION conflict_on_rename()",
    )
    user_id = insert_user(db_url, "someone@example.com", name="Someone")
    user = f"/api/v1/users/{user_id}"
    with live_server_on(db_url) as live:
        admin = live.callers.admin
        conflicted = live.client.patch(user, json={"name": sqlstate}, headers=admin)
        unchanged = live.client.get(user, headers=admin)
        retried = live.client.patch(user, json={"name": "Someone Else"}, headers=admin)
    assert_retry_later(
        conflicted, "Database busy: the transaction conflicted with another; retry", retry_after=2
    )
    assert unchanged.json()["name"] == "Someone"
    assert retried.status_code == 200
    assert retried.json()["name"] == "Someone Else"
