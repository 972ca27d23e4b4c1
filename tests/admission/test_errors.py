"""Admission refusals rendered by the app's one error handler: status, JSON and headers."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from reviewpoint.admission import AdmissionStoreUnavailable, Decision, Policy, TooManyRequests
from reviewpoint.errors import NotAuthenticated, ServiceUnavailable, install_error_handlers


def _app_raising(error: Exception) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/limited")
    async def limited() -> None:
        raise error

    return TestClient(app)


def test_too_many_requests_carries_its_own_headers() -> None:
    decision = Decision(False, Policy.parse("exports", "30/minute"), remaining=0, reset_after=41)
    error = TooManyRequests(
        "Rate limit exceeded", retry_after=decision.reset_after, headers=decision.headers()
    )
    response = _app_raising(error).get("/limited")
    assert response.status_code == 429
    assert response.json() == {"detail": "Rate limit exceeded"}
    assert response.headers["Retry-After"] == "41"
    assert response.headers["RateLimit-Policy"] == '"exports";q=30;w=60'
    assert response.headers["RateLimit"] == '"exports";r=0;t=41'


def test_headers_of_one_error_do_not_leak_into_the_next() -> None:
    TooManyRequests("Too many concurrent exports", retry_after=7)
    later = TooManyRequests("Too many concurrent exports", retry_after=2)
    assert later.response_headers() == {"Retry-After": "2"}
    assert ServiceUnavailable("Database unavailable", retry_after=5).response_headers() == {
        "Retry-After": "5"
    }


def test_class_headers_still_apply_with_instance_headers() -> None:
    error = NotAuthenticated("Not authenticated", headers={"X-Extra": "1"})
    headers = _app_raising(error).get("/limited").headers
    assert headers["WWW-Authenticate"] == 'Bearer, ApiKey header="X-API-Key"'
    assert headers["X-Extra"] == "1"


def test_store_unavailable_is_a_503_with_retry_after() -> None:
    response = _app_raising(AdmissionStoreUnavailable()).get("/limited")
    assert response.status_code == 503
    assert response.json() == {"detail": "Rate limit store unavailable"}
    assert int(response.headers["Retry-After"]) >= 1


def test_policy_names_are_quoted_as_structured_field_strings() -> None:
    decision = Decision(True, Policy.parse('odd "name"', "5/second"), remaining=4, reset_after=1)
    assert decision.headers() == {
        "RateLimit-Policy": '"odd \\"name\\"";q=5;w=1',
        "RateLimit": '"odd \\"name\\"";r=4;t=1',
    }
