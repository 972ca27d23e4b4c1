"""The exports as the OpenAPI schema describes them: every parameter, every format."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from reviewpoint.exports.formats import FORMATS

EXPORTS = ["/api/v1/users/export", "/api/v1/users/export-full"]


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("path", EXPORTS)
def test_every_export_parameter_has_a_description_and_an_example(
    schema: dict[str, Any], path: str
) -> None:
    parameters = schema["paths"][path]["get"]["parameters"]
    names = {parameter["name"] for parameter in parameters}
    assert {"format", "email", "is_active", "is_admin", "created_after", "created_before"} <= names
    assert {"updated_since", "after_id", "limit", "bom", "excel_safe"} <= names
    # Each picks columns or syncs on -full, and is a documented 400 on the minimal export.
    assert {"fields", "cursor", "if-none-match"} <= names
    for parameter in parameters:
        # If-None-Match (conditional requests) is the one header.
        assert parameter["in"] == ("header" if parameter["name"] == "if-none-match" else "query")
        assert parameter["description"], parameter["name"]
        assert parameter["examples"]["example"]["value"] is not None, parameter["name"]


@pytest.mark.parametrize("path", EXPORTS)
def test_each_format_is_documented_with_its_media_type(schema: dict[str, Any], path: str) -> None:
    responses = schema["paths"][path]["get"]["responses"]
    download = responses["200"]
    assert set(download["content"]) == {fmt.media_type for fmt in FORMATS.values()}
    assert download["content"]["text/csv"]["example"].startswith("id,email,name")
    assert {"X-Export-Rows", "ETag"} <= set(download["headers"])
    assert {"304", "400", "401", "403", "422", "429", "503"} <= set(responses)
