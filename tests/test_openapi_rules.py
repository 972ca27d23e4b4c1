"""The OpenAPI document states the rules validation enforces, so clients (and the
schema fuzzing in tests/contract/) can tell a valid request from an invalid one.

Each case pairs what the document says with what the server answers: a value the
schema's pattern refuses is refused, one it allows gets past validation.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from tests.data import bearer_headers, insert_user


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def admin(settings: Settings, db_url: str) -> dict[str, str]:
    return bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))


def _query_schema(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    parameters = document["paths"][path]["get"]["parameters"]
    schema: dict[str, Any] = next(p for p in parameters if p["name"] == name)["schema"]
    return schema


@pytest.mark.parametrize(
    ("value", "status"), [("CsV", 200), ("NDJSON", 200), ("xml", 400), ("csv ", 400)]
)
def test_format_pattern_is_what_the_export_takes(
    client: TestClient, document: dict[str, Any], admin: dict[str, str], value: str, status: int
) -> None:
    pattern = _query_schema(document, "/api/v1/users/export", "format")["pattern"]
    assert bool(re.fullmatch(pattern, value)) is (status == 200)
    response = client.get("/api/v1/users/export", params={"format": value}, headers=admin)
    assert response.status_code == status


@pytest.mark.parametrize(
    ("value", "status"),
    [("Day", 200), (" day ", 200), ("Off", 200), ("1", 200), ("maybe", 422), ("2", 422)],
)
def test_anonymize_pattern_is_what_the_export_takes(
    client: TestClient, document: dict[str, Any], admin: dict[str, str], value: str, status: int
) -> None:
    schema = _query_schema(document, "/api/v1/users/export", "anonymize")
    assert "enum" not in schema
    assert bool(re.fullmatch(schema["pattern"], value)) is (status == 200)
    response = client.get("/api/v1/users/export", params={"anonymize": value}, headers=admin)
    # 200, or 503 where this test server has no anonymization key: past validation.
    assert response.status_code in ((200, 503) if status == 200 else (422,))


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("user:1", True),
        ("cli:0", True),
        ("api_key:2147483647", True),
        ("user:0", False),
        ("api_key:2147483648", False),
        ("created_by", False),
    ],
)
def test_actor_pattern_is_what_the_audit_filter_takes(
    client: TestClient, document: dict[str, Any], admin: dict[str, str], value: str, valid: bool
) -> None:
    pattern = _query_schema(document, "/api/v1/exports/audit", "actor")["pattern"]
    assert bool(re.fullmatch(pattern, value)) is valid
    response = client.get("/api/v1/exports/audit", params={"actor": value}, headers=admin)
    assert response.status_code == (200 if valid else 422)


def test_body_strings_say_nul_is_refused(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["UserCreate"]["properties"]["password"]["pattern"] == "^[^\\u0000]*$"
    assert schemas["ApiKeyCreate"]["properties"]["name"]["pattern"] == "^[^\\u0000]*$"


def test_special_use_email_domains_are_refused_as_documented(
    client: TestClient, document: dict[str, Any], admin: dict[str, str]
) -> None:
    pattern = document["components"]["schemas"]["UserCreate"]["properties"]["email"]["pattern"]
    body = {"email": "someone@host.test", "password": "long-enough-1"}
    assert re.match(pattern, body["email"]) is None
    response = client.post("/api/v1/users", json=body, headers=admin)
    assert response.status_code == 422
    assert re.match(pattern, "someone@host.example") is not None


def test_key_fields_items_are_documented(document: dict[str, Any]) -> None:
    fields = document["components"]["schemas"]["ApiKeyCreate"]["properties"]["fields"]
    assert fields["uniqueItems"] is True and fields["minItems"] == 1
    assert re.fullmatch(fields["items"]["pattern"], "last_login_at")
    assert not re.fullmatch(fields["items"]["pattern"], "password")


def test_created_resources_link_to_what_can_be_done_with_them(document: dict[str, Any]) -> None:
    user = document["paths"]["/api/v1/users"]["post"]["responses"]["201"]["links"]
    assert set(user) == {"GetUser", "UpdateUser", "DeleteUser"}
    key = document["paths"]["/api/v1/api-keys"]["post"]["responses"]["201"]["links"]
    assert set(key) == {"UseKey", "RotateKey", "RevokeKey"}
    assert key["UseKey"]["parameters"] == {"header.X-API-Key": "$response.body#/secret"}
    for link in [*user.values(), *key.values()]:
        path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
        assert method in document["paths"][path.replace("~1", "/")]


def test_every_export_format_documents_its_records(document: dict[str, Any]) -> None:
    for path in ("/api/v1/users/export", "/api/v1/users/export-full"):
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        assert len(content) == 4
        for media in content.values():
            assert media["schema"]["type"] == "array"
            assert media["schema"]["items"]["additionalProperties"] is False


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("value", ["", "a\x00b"])
def test_login_form_documents_what_it_refuses(
    client: TestClient, document: dict[str, Any], field: str, value: str
) -> None:
    form = document["components"]["schemas"]["Body_login_api_v1_auth_login_post"]
    rule = form["properties"][field]
    assert len(value) < rule["minLength"] or not re.match(rule["pattern"], value)
    data = {"username": "someone@example.com", "password": "long-enough-1", field: value}
    response = client.post("/api/v1/auth/login", data=data)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/users/export", "fields"),  # found by a random-seed fuzzing run
        ("/api/v1/users/export", "email"),
        ("/api/v1/users/export-full", "cursor"),
        ("/api/v1/features/{name}", "name"),
    ],
)
def test_free_form_string_parameters_say_nul_is_refused(
    client: TestClient, document: dict[str, Any], admin: dict[str, str], path: str, name: str
) -> None:
    operations = document["paths"][path]
    parameter = next(p for p in next(iter(operations.values()))["parameters"] if p["name"] == name)
    string = next(
        b for b in parameter["schema"].get("anyOf", [parameter["schema"]]) if b["type"] == "string"
    )
    assert not re.match(string["pattern"], "Lr\x00")
    assert re.match(string["pattern"], "Lr")
    url = path.replace("{name}", "Lr%00")
    params = {} if "{" in path else {name: "Lr\x00"}
    response = client.request("PUT" if "{" in path else "GET", url, params=params, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] in ("path", "query")
