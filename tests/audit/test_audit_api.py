"""`GET /api/v1/exports/audit`: admins read the trail, newest first, filtered and paged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from tests.audit.records import AUDIT, add_record, key_actor, user_actor
from tests.data import admin_headers, bearer_headers, create_api_key, insert_user

ITEM_FIELDS = {
    "id",
    "request_id",
    "endpoint",
    "format",
    "filters",
    "actor",
    "outcome",
    "status",
    "detail",
    "rows",
    "bytes",
    "started_at",
    "finished_at",
    "duration_seconds",
    "client_address",
    "user_agent",
    "fields",
    "anonymized",
}
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def admin(client: TestClient, db_url: str) -> dict[str, str]:
    return admin_headers(client, db_url)


def _ids(response_json: dict[str, object]) -> list[object]:
    data = response_json["data"]
    assert isinstance(data, list)
    return [item["id"] for item in data]


def test_the_audit_is_for_administrators_only(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    user_id = insert_user(db_url, "plain@example.com")
    _, key = create_api_key(db_url, ["users:export_full"])

    anonymous = client.get(AUDIT)
    assert anonymous.status_code == 401
    assert "WWW-Authenticate" in anonymous.headers
    # An export key is no admin credential: the wrong kind, so 403.
    assert client.get(AUDIT, headers={"X-API-Key": key}).status_code == 403
    plain = client.get(AUDIT, headers=bearer_headers(settings, user_id))
    assert plain.status_code == 403
    assert plain.json() == {"detail": "Administrator privileges required"}


def test_records_come_newest_first_with_every_field(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    older = add_record(
        db_url,
        started_at=NOON,
        actor=key_actor(3, "sync", "0a1b2c3d4e5f"),
        fields=("id", "name", "created_at"),
        anonymized="day",
    )
    newer = add_record(
        db_url,
        started_at=NOON + timedelta(minutes=5),
        outcome="denied",
        status=401,
        rows=0,
    )
    response = client.get(AUDIT, headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert _ids(body) == [newer, older]
    first, second = body["data"]
    assert set(first) == set(second) == ITEM_FIELDS
    assert first["actor"] is None
    # Refused before its columns were known: nothing was delivered.
    assert (first["fields"], first["anonymized"]) == (None, None)
    assert second["fields"] == ["id", "name", "created_at"]
    assert second["anonymized"] == "day"
    assert second["actor"] == {
        "kind": "api_key",
        "id": 3,
        "name": "sync",
        "key_prefix": "0a1b2c3d4e5f",
    }
    assert second["filters"] == {}
    assert second["started_at"] == "2026-11-20T12:00:00Z"
    assert second["finished_at"] == "2026-11-20T12:00:02Z"
    assert second["duration_seconds"] == 2.0
    assert (second["outcome"], second["status"], second["endpoint"]) == (
        "completed",
        200,
        "export-full",
    )


def test_pages_follow_the_users_api(client: TestClient, db_url: str, admin: dict[str, str]) -> None:
    ids = [add_record(db_url, started_at=NOON + timedelta(seconds=i)) for i in range(5)]
    newest_first = ids[::-1]

    page = client.get(AUDIT, params={"limit": 2}, headers=admin).json()
    assert (page["count"], _ids(page)) == (5, newest_first[:2])
    page = client.get(AUDIT, params={"limit": 2, "offset": 2}, headers=admin).json()
    assert (page["count"], _ids(page)) == (5, newest_first[2:4])
    page = client.get(AUDIT, params={"offset": 5}, headers=admin).json()
    assert (page["count"], _ids(page)) == (5, [])
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**31}):
        refused = client.get(AUDIT, params=params, headers=admin)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["query", next(iter(params))]


def test_actor_filter_tells_users_from_keys_with_the_same_id(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    by_user = add_record(db_url, started_at=NOON, actor=user_actor(7))
    by_key = add_record(db_url, started_at=NOON, actor=key_actor(7))
    add_record(db_url, started_at=NOON, actor=key_actor(8))
    add_record(db_url, started_at=NOON)

    for actor, expected in (("user:7", [by_user]), ("api_key:7", [by_key]), ("user:8", [])):
        page = client.get(AUDIT, params={"actor": actor}, headers=admin).json()
        assert (page["count"], _ids(page)) == (len(expected), expected)


def test_outcome_since_and_until_filters_combine(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    early = add_record(db_url, started_at=NOON - timedelta(hours=2), outcome="limited", status=429)
    at_noon = add_record(db_url, started_at=NOON, outcome="limited", status=429)
    late = add_record(db_url, started_at=NOON + timedelta(hours=2), outcome="limited", status=429)
    add_record(db_url, started_at=NOON, outcome="completed")

    def ids(**params: str) -> list[object]:
        response = client.get(AUDIT, params=params, headers=admin)
        assert response.status_code == 200, response.text
        return _ids(response.json())

    assert ids(outcome="limited") == [late, at_noon, early]
    # `since` includes its instant, `until` excludes it; any zone is compared in UTC.
    assert ids(outcome="limited", since="2026-11-20T12:00:00Z") == [late, at_noon]
    assert ids(outcome="limited", since="2026-11-20T14:00:00+02:00") == [late, at_noon]
    assert ids(outcome="limited", until="2026-11-20T12:00:00Z") == [early]
    assert ids(outcome="limited", since="2026-11-20T11:00:00Z", until="2026-11-20T13:00:00Z") == [
        at_noon
    ]
    assert ids(outcome="aborted") == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("actor", "user"),
        ("actor", "user:"),
        ("actor", "user:0"),
        ("actor", "user:-1"),
        ("actor", "user:abc"),
        ("actor", "user:\uff11"),  # a fullwidth digit
        ("actor", "group:1"),
        ("actor", "api_key:2147483648"),
        ("outcome", "done"),
        ("since", "2026-11-20T12:00:00"),
        ("since", "1700000000"),
        ("since", "yesterday"),
        ("until", "2026-11-20"),
        ("until", "0001-01-01T00:00:00+01:00"),
        ("since", "9999-12-31T23:59:59-01:00"),
    ],
)
def test_an_invalid_filter_is_a_422_naming_it(
    client: TestClient, admin: dict[str, str], name: str, value: str
) -> None:
    response = client.get(AUDIT, params={name: value}, headers=admin)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", name]
    assert set(error) == {"loc", "msg", "type"}


def test_the_audit_route_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][AUDIT]["get"]
    assert {"200", "401", "403", "422"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} == {
        "offset",
        "limit",
        "actor",
        "outcome",
        "since",
        "until",
    }
    described = {p["name"] for p in operation["parameters"] if p.get("description")}
    assert {"limit", "actor", "outcome", "since", "until"} <= described
    example = operation["responses"]["200"]["content"]["application/json"]["example"]
    # The schema drops null values from examples; between them the items show every field.
    assert set(example["data"][0]) | set(example["data"][1]) == ITEM_FIELDS
