from fastapi.testclient import TestClient


def test_export_alive_needs_no_credentials(client: TestClient) -> None:
    response = client.get("/api/v1/users/export-alive")
    assert response.status_code == 200
    assert response.json() == {"status": "users export alive"}


def test_export_simple_needs_no_credentials(client: TestClient) -> None:
    response = client.get("/api/v1/users/export-simple")
    assert response.status_code == 200
    assert response.json() == {"users": "export simple status"}
