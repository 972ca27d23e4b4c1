"""The console over plain HTTP (TestClient): headers, cookie flags, sessions, CSRF,
who may sign in, and the export page's count against the API's own."""

from __future__ import annotations

import html
import re
import secrets
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings, load_settings
from reviewpoint.console.headers import CONTENT_SECURITY_POLICY
from reviewpoint.console.sessions import SESSION_COOKIE, SIGN_IN_COOKIE
from reviewpoint.main import create_app
from tests.console.conftest import ADMIN_EMAIL
from tests.data import (
    ADMIN_PASSWORD,
    bearer_headers,
    create_api_key,
    create_user,
    insert_users,
    login,
    revoke_api_key,
)

SIGN_IN = "/console/sign-in"
# For what no database decides (headers, cookies, routing): one run is enough.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
EXPORT_PAGE = "/console/export"


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def _set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    """Each Set-Cookie header parsed, by cookie name."""
    parsed = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        parsed.update({name: cookie for name in cookie})
    return parsed


def _sign_in(
    client: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD
) -> httpx.Response:
    form = client.get(SIGN_IN)
    return client.post(
        SIGN_IN,
        data={"email": email, "password": password, "csrf_token": _csrf(form)},
        follow_redirects=False,
    )


@pytest.fixture
def admin(db_url: str) -> int:
    return create_user(db_url, ADMIN_EMAIL, password=ADMIN_PASSWORD, is_admin=True)


@pytest.fixture
def signed_in(client: TestClient, admin: int) -> TestClient:
    assert _sign_in(client).status_code == 303
    return client


# Headers and cookies


@SQLITE_ONLY
@pytest.mark.parametrize("path", [SIGN_IN, "/console/nowhere", "/console/static/console.css"])
def test_every_console_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_policy_allows_no_inline_code_and_no_framing() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@SQLITE_ONLY
def test_the_api_keeps_its_own_headers(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert "content-security-policy" not in response.headers


def test_the_session_cookie_is_httponly_strict_signed_and_expires(
    signed_in: TestClient, settings: Settings
) -> None:
    response = _sign_in(signed_in)
    cookie = _set_cookies(response)[SESSION_COOKIE][SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "strict"
    assert cookie["path"] == "/console"
    assert int(cookie["max-age"]) == 8 * 3600
    assert not cookie["secure"]  # plain HTTP here; see the HTTPS test
    token, _, signature = cookie.value.partition(".")
    assert token and signature


@SQLITE_ONLY
def test_cookies_are_secure_when_served_over_https(settings: Settings, admin: int) -> None:
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        form = client.get(SIGN_IN)
        assert _set_cookies(form)[SIGN_IN_COOKIE][SIGN_IN_COOKIE]["secure"] is True
        response = _sign_in(client)
    assert response.status_code == 303
    assert _set_cookies(response)[SESSION_COOKIE][SESSION_COOKIE]["secure"] is True


@SQLITE_ONLY
def test_console_routes_are_not_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]


# Sessions


@SQLITE_ONLY
def test_pages_without_a_session_send_the_browser_to_sign_in(client: TestClient) -> None:
    response = client.get(EXPORT_PAGE, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == SIGN_IN


@SQLITE_ONLY
def test_an_htmx_request_without_a_session_is_told_where_to_go(client: TestClient) -> None:
    response = client.get("/console/export/preview", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == SIGN_IN


@pytest.mark.parametrize("tamper", ["signature", "token"])
def test_an_altered_session_cookie_opens_nothing(signed_in: TestClient, tamper: str) -> None:
    value = signed_in.cookies[SESSION_COOKIE]
    token, _, signature = value.partition(".")
    altered = f"{token}.{signature[::-1]}" if tamper == "signature" else f"x{token}.{signature}"
    signed_in.cookies.set(SESSION_COOKIE, altered, path="/console")
    assert signed_in.get(EXPORT_PAGE, follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session_on_the_server(signed_in: TestClient) -> None:
    cookie = signed_in.cookies[SESSION_COOKIE]
    page = signed_in.get(EXPORT_PAGE)
    response = signed_in.post(
        "/console/sign-out", data={"csrf_token": _csrf(page)}, follow_redirects=False
    )
    assert response.status_code == 303
    signed_in.cookies.clear()
    signed_in.cookies.set(SESSION_COOKIE, cookie, path="/console")
    assert signed_in.get(EXPORT_PAGE, follow_redirects=False).status_code == 303


def test_an_admin_who_loses_the_role_loses_the_session(
    signed_in: TestClient, admin: int, settings: Settings, db_url: str
) -> None:
    other = create_user(db_url, "second@example.com", password=ADMIN_PASSWORD, is_admin=True)
    response = signed_in.patch(
        f"/api/v1/users/{admin}", json={"is_admin": False}, headers=bearer_headers(settings, other)
    )
    assert response.status_code == 200, response.text
    assert signed_in.get(EXPORT_PAGE, follow_redirects=False).status_code == 303


# Who may sign in


def test_a_non_admin_is_refused_with_a_message_and_no_session(
    client: TestClient, db_url: str
) -> None:
    create_user(db_url, "user@example.com", password="user-password-1")
    response = _sign_in(client, "user@example.com", "user-password-1")
    assert response.status_code == 403
    assert "Only administrators can sign in to the console." in response.text
    assert SESSION_COOKIE not in _set_cookies(response)


def test_a_wrong_password_is_a_401_page(client: TestClient, admin: int) -> None:
    response = _sign_in(client, ADMIN_EMAIL, "wrong-password")
    assert response.status_code == 401
    assert "Incorrect email or password." in response.text


@SQLITE_ONLY
def test_sign_in_counts_against_the_login_rate_limit(db_url: str, admin: int) -> None:
    limited = create_app(_settings_with(db_url, login_rate_limit="2/minute"))
    with TestClient(limited) as client:
        # The API's login and the console's share one budget per account.
        login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert _sign_in(client, ADMIN_EMAIL, "wrong-password").status_code == 401
        refused = _sign_in(client)
    assert refused.status_code == 429
    assert "Too many login attempts" in refused.text
    assert "retry-after" in refused.headers


@SQLITE_ONLY
def test_the_console_flag_off_closes_every_page(db_url: str) -> None:
    with TestClient(create_app(_settings_with(db_url, feature_console=False))) as client:
        response = client.get(SIGN_IN)
    assert response.status_code == 403
    assert response.json() == {"detail": "Feature 'console' is disabled"}


# CSRF


@pytest.mark.parametrize("token", [None, "", "forged"])
def test_sign_out_without_the_forms_token_is_refused(
    signed_in: TestClient, token: str | None
) -> None:
    data = {} if token is None else {"csrf_token": token}
    response = signed_in.post("/console/sign-out", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert signed_in.get(EXPORT_PAGE, follow_redirects=False).status_code == 200


@SQLITE_ONLY
def test_sign_in_without_the_forms_token_is_refused(client: TestClient, admin: int) -> None:
    client.get(SIGN_IN)
    response = client.post(
        SIGN_IN,
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "This sign-in form expired or was not ours" in response.text
    assert SESSION_COOKIE not in _set_cookies(response)


@SQLITE_ONLY
@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://attacker.example"}],
    ids=["fetch-site", "origin"],
)
def test_a_post_from_another_site_is_refused_even_with_a_valid_token(
    signed_in: TestClient, headers: dict[str, str]
) -> None:
    page = signed_in.get(EXPORT_PAGE)
    response = signed_in.post(
        "/console/sign-out",
        data={"csrf_token": _csrf(page)},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 403


# The export page


def test_the_count_is_the_api_exports_row_count(
    signed_in: TestClient, db_url: str, settings: Settings, admin: int
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(12)])
    query = {"kind": "full", "fields": "id,email", "after_id": "3", "limit": "5"}
    preview = signed_in.get("/console/export/preview", params=query)
    # The preview renders at once and fetches the count once shown.
    assert "row-count" not in preview.text
    count_url = re.search(r'hx-get="([^"]+)" hx-trigger="load"', preview.text)
    assert count_url is not None
    counted = signed_in.get(html.unescape(count_url.group(1)))
    assert counted.status_code == 200
    count = re.search(r'id="row-count">([\d,]+)<', counted.text)
    assert count is not None
    api = signed_in.get(
        "/api/v1/users/export-full",
        params={"fields": "id,email", "after_id": "3", "limit": "5"},
        headers=bearer_headers(settings, admin),
    )
    assert count.group(1) == api.headers["X-Export-Rows"] == "5"


def test_the_count_of_a_bad_filter_says_why_in_place(signed_in: TestClient) -> None:
    counted = signed_in.get(
        "/console/export/count", params={"kind": "full", "created_after": "yesterday"}
    )
    assert counted.status_code == 200
    assert 'role="alert"' in counted.text
    assert "created_after" in counted.text
    assert "row-count" not in counted.text


def test_a_download_without_a_session_is_refused_and_audited(
    client: TestClient, settings: Settings, db_url: str
) -> None:
    response = client.get("/console/download/export-full", follow_redirects=False)
    assert response.status_code == 303
    admin_id = create_user(db_url, ADMIN_EMAIL, password=ADMIN_PASSWORD, is_admin=True)
    audit = client.get("/api/v1/exports/audit", headers=bearer_headers(settings, admin_id))
    assert [(r["endpoint"], r["outcome"]) for r in audit.json()["data"]] == [
        ("export-full", "denied")
    ]


def test_a_download_names_the_admin_in_the_audit_trail(
    signed_in: TestClient, settings: Settings, admin: int
) -> None:
    response = signed_in.get("/console/download/export", params={"format": "ndjson"})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="users_export.ndjson"'
    audit = signed_in.get("/api/v1/exports/audit", headers=bearer_headers(settings, admin))
    [record] = audit.json()["data"]
    assert (record["endpoint"], record["outcome"], record["actor"]["name"]) == (
        "export",
        "completed",
        ADMIN_EMAIL,
    )


def _settings_with(db_url: str, **overrides: object) -> Settings:
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="warning",
        jwt_secret_key=secrets.token_urlsafe(32),
        **overrides,
    )


# API keys


def test_creating_a_key_without_the_forms_token_creates_nothing(
    signed_in: TestClient, settings: Settings, admin: int
) -> None:
    response = signed_in.post(
        "/console/keys", data={"name": "sneaky", "scopes": "users:export"}, follow_redirects=False
    )
    assert response.status_code == 403
    keys = signed_in.get("/api/v1/api-keys", headers=bearer_headers(settings, admin))
    assert keys.json() == []


def test_a_key_without_a_scope_is_refused_in_place(signed_in: TestClient) -> None:
    page = signed_in.get("/console/keys")
    response = signed_in.post("/console/keys", data={"name": "no scope", "csrf_token": _csrf(page)})
    assert response.status_code == 422
    assert "scopes: List should have at least 1 item" in response.text
    assert 'value="no scope"' in response.text  # what was typed stays


def test_a_created_keys_secret_is_shown_once_and_never_cached(
    signed_in: TestClient, settings: Settings, admin: int
) -> None:
    page = signed_in.get("/console/keys")
    response = signed_in.post(
        "/console/keys",
        data={"name": "report", "scopes": ["users:export_full"], "csrf_token": _csrf(page)},
    )
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    secret = re.search(r'id="secret" readonly value="(rvp_[^"]+)"', response.text)
    assert secret is not None
    assert secret.group(1) not in signed_in.get("/console/keys").text
    export = signed_in.get("/api/v1/users/export-full", headers={"X-API-Key": secret.group(1)})
    assert export.status_code == 200


def test_a_key_created_with_limits_gets_only_those_and_the_list_shows_them(
    signed_in: TestClient, settings: Settings, admin: int
) -> None:
    page = signed_in.get("/console/keys")
    response = signed_in.post(
        "/console/keys",
        data={
            "name": "partner",
            "scopes": ["users:export_full"],
            "fields": "id, name",
            "anonymized_only": "true",
            "csrf_token": _csrf(page),
        },
    )
    assert response.status_code == 201
    secret = re.search(r'id="secret" readonly value="(rvp_[^"]+)"', response.text)
    assert secret is not None
    stored = signed_in.get("/api/v1/api-keys", headers=bearer_headers(settings, admin)).json()
    assert [(key["fields"], key["anonymized_only"]) for key in stored] == [(["id", "name"], True)]
    export = signed_in.get("/api/v1/users/export-full", headers={"X-API-Key": secret.group(1)})
    assert export.status_code == 200
    assert export.text.splitlines()[0] == "id,name"
    assert "id, name; anonymized only" in signed_in.get("/console/keys").text


def test_a_key_with_an_unknown_field_is_refused_in_place(signed_in: TestClient) -> None:
    page = signed_in.get("/console/keys")
    response = signed_in.post(
        "/console/keys",
        data={
            "name": "typo",
            "scopes": ["users:export"],
            "fields": "id,nmae",
            "csrf_token": _csrf(page),
        },
    )
    assert response.status_code == 422
    assert "nmae" in response.text
    assert 'value="id,nmae"' in response.text  # what was typed stays


def test_revoking_a_revoked_key_says_so_in_place(signed_in: TestClient, db_url: str) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    revoke_api_key(db_url, key_id)
    page = signed_in.get(f"/console/keys/{key_id}/revoke")
    response = signed_in.post(f"/console/keys/{key_id}/revoke", data={"csrf_token": _csrf(page)})
    assert response.status_code == 409
    assert "already revoked" in response.text.lower()


def test_confirming_an_unknown_key_is_a_404_page(signed_in: TestClient) -> None:
    response = signed_in.get("/console/keys/999/rotate")
    assert response.status_code == 404
    assert "No such API key." in response.text


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path", [SIGN_IN, EXPORT_PAGE, "/console/keys", "/console/flags", "/console/users"]
)
def test_a_page_and_its_assets_weigh_under_100_kb(signed_in: TestClient, path: str) -> None:
    """Uncompressed, as a browser with an empty cache fetches them."""
    response = signed_in.get(path, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', response.text)
    assert {asset.rsplit("/", 1)[1] for asset in assets} == {
        "console.css",
        "htmx.min.js",
        "console.js",
    }
    sizes = [
        len(signed_in.get(asset, headers={"Accept-Encoding": "identity"}).content)
        for asset in assets
    ]
    assert len(response.content) + sum(sizes) < 100 * 1024


def test_form_numbers_reach_the_api_schemas_as_integers(signed_in: TestClient, db_url: str) -> None:
    # The API's schemas refuse a JSON string for an integer; a form only sends text.
    page = signed_in.get("/console/keys")
    response = signed_in.post(
        "/console/keys",
        data={
            "name": "monthly",
            "scopes": ["users:export"],
            "expires_in_days": "30",
            "csrf_token": _csrf(page),
        },
    )
    assert response.status_code == 201
    key_id, _ = create_api_key(db_url, ["users:export"])
    page = signed_in.get(f"/console/keys/{key_id}/rotate")
    rotated = signed_in.post(
        f"/console/keys/{key_id}/rotate", data={"grace_minutes": "5", "csrf_token": _csrf(page)}
    )
    assert rotated.status_code == 201
    page = signed_in.get("/console/keys")
    refused = signed_in.post(
        "/console/keys",
        data={
            "name": "x",
            "scopes": ["users:export"],
            "expires_in_days": "soon",
            "csrf_token": _csrf(page),
        },
    )
    assert refused.status_code == 422
