"""The authentication matrix (issue #10 item 3): every route against every kind of credential.

Each case sends one credential to one route and asserts exactly what the
README's Credentials section promises: the status, the JSON `detail`, the
`WWW-Authenticate` challenge on a 401 (one the route can meet), no data in a
refusal and never a 5xx. Routes come from the app itself, so a route added
without a row here fails `test_every_route_is_in_the_matrix`.

One app and one database per backend serve the whole module: the people and
keys are made once, through the HTTP API, and no case changes them (writes a
permitted caller may make aim at an id that does not exist, or send a body
that fails validation, so they are refused after the credential check).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.routing import Mount

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.config import Settings, load_settings
from reviewpoint.db import create_engine, utcnow
from reviewpoint.inputs import INT32_MAX
from reviewpoint.main import create_app
from tests.conftest import BACKENDS, migrated_database
from tests.data import bearer_headers, create_api_key, insert_user


class Access(Enum):
    """Who a route admits."""

    PUBLIC = "anyone; credentials are ignored"
    USER = "a live, active user's bearer token"
    ADMIN = "an active administrator's bearer token"
    EXPORT = "a key with users:export (or users:export_full), or an admin's token"
    EXPORT_FULL = "a key with users:export_full, or an admin's token"
    # The browser console's own credential is its session cookie: no API key or
    # token opens it (tests/console/ covers signed-in sessions).
    CONSOLE = "an admin's console session cookie only"


@dataclass(frozen=True)
class Route:
    access: Access
    # The request a permitted caller makes, and what it gets. Writes are aimed
    # so that they change nothing (a missing id, an invalid body).
    path: str
    permitted: int
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None


NO_ID = INT32_MAX  # an id no row has
TARGET = "{target}"  # a live plain user's id, filled in per database

# Every route the app serves, by method and path as routed.
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/openapi.json"): Route(Access.PUBLIC, "/openapi.json", 200),
    ("GET", "/docs"): Route(Access.PUBLIC, "/docs", 200),
    ("GET", "/docs/oauth2-redirect"): Route(Access.PUBLIC, "/docs/oauth2-redirect", 200),
    ("GET", "/redoc"): Route(Access.PUBLIC, "/redoc", 200),
    ("GET", "/metrics"): Route(Access.PUBLIC, "/metrics", 200),
    ("GET", "/api/v1/health"): Route(Access.PUBLIC, "/api/v1/health", 200),
    ("GET", "/api/v1/health/ready"): Route(Access.PUBLIC, "/api/v1/health/ready", 200),
    # An empty form: 422 whoever sends it, and no password is hashed.
    ("POST", "/api/v1/auth/login"): Route(Access.PUBLIC, "/api/v1/auth/login", 422, form={}),
    ("GET", "/api/v1/auth/me"): Route(Access.USER, "/api/v1/auth/me", 200),
    ("GET", "/api/v1/users/export"): Route(Access.EXPORT, "/api/v1/users/export", 200),
    ("GET", "/api/v1/users/export-full"): Route(
        Access.EXPORT_FULL, "/api/v1/users/export-full", 200
    ),
    ("GET", "/api/v1/users/export-alive"): Route(Access.PUBLIC, "/api/v1/users/export-alive", 200),
    ("GET", "/api/v1/users/export-simple"): Route(
        Access.PUBLIC, "/api/v1/users/export-simple", 200
    ),
    ("POST", "/api/v1/users"): Route(Access.ADMIN, "/api/v1/users", 422, json={}),
    ("GET", "/api/v1/users"): Route(Access.ADMIN, "/api/v1/users", 200),
    ("GET", "/api/v1/users/{user_id:int}"): Route(Access.ADMIN, f"/api/v1/users/{TARGET}", 200),
    ("PATCH", "/api/v1/users/{user_id:int}"): Route(
        Access.ADMIN, f"/api/v1/users/{NO_ID}", 404, json={"name": "Changed"}
    ),
    ("DELETE", "/api/v1/users/{user_id:int}"): Route(Access.ADMIN, f"/api/v1/users/{NO_ID}", 404),
    ("POST", "/api/v1/api-keys"): Route(Access.ADMIN, "/api/v1/api-keys", 422, json={}),
    ("GET", "/api/v1/api-keys"): Route(Access.ADMIN, "/api/v1/api-keys", 200),
    ("POST", "/api/v1/api-keys/{key_id:int}/rotate"): Route(
        Access.ADMIN, f"/api/v1/api-keys/{NO_ID}/rotate", 404
    ),
    ("DELETE", "/api/v1/api-keys/{key_id:int}"): Route(
        Access.ADMIN, f"/api/v1/api-keys/{NO_ID}", 404
    ),
    ("GET", "/api/v1/features"): Route(Access.ADMIN, "/api/v1/features", 200),
    ("GET", "/api/v1/features/changes"): Route(Access.ADMIN, "/api/v1/features/changes", 200),
    ("PUT", "/api/v1/features/{name}"): Route(
        Access.ADMIN, "/api/v1/features/no:such-flag", 404, json={"enabled": False}
    ),
    ("DELETE", "/api/v1/features/{name}"): Route(
        Access.ADMIN, "/api/v1/features/no:such-flag", 404
    ),
    ("GET", "/api/v1/exports/audit"): Route(Access.ADMIN, "/api/v1/exports/audit", 200),
    # The console: its entry and sign-in form are public; the sign-in POST
    # without the form's CSRF cookie is refused whoever sends it.
    ("GET", "/console"): Route(Access.PUBLIC, "/console", 303),
    ("GET", "/console/sign-in"): Route(Access.PUBLIC, "/console/sign-in", 200),
    ("POST", "/console/sign-in"): Route(Access.PUBLIC, "/console/sign-in", 403, form={}),
    ("POST", "/console/sign-out"): Route(Access.CONSOLE, "/console/sign-out", 0, form={}),
    ("GET", "/console/export"): Route(Access.CONSOLE, "/console/export", 0),
    ("GET", "/console/export/preview"): Route(Access.CONSOLE, "/console/export/preview", 0),
    ("GET", "/console/export/count"): Route(Access.CONSOLE, "/console/export/count", 0),
    ("GET", "/console/download/export"): Route(Access.CONSOLE, "/console/download/export", 0),
    ("GET", "/console/download/export-full"): Route(
        Access.CONSOLE, "/console/download/export-full", 0
    ),
    ("GET", "/console/keys"): Route(Access.CONSOLE, "/console/keys", 0),
    ("GET", "/console/audit"): Route(Access.CONSOLE, "/console/audit", 0),
    ("POST", "/console/keys"): Route(Access.CONSOLE, "/console/keys", 0, form={}),
    ("GET", "/console/keys/{key_id:int}/{action:str}"): Route(
        Access.CONSOLE, f"/console/keys/{NO_ID}/revoke", 0
    ),
    ("POST", "/console/keys/{key_id:int}/rotate"): Route(
        Access.CONSOLE, f"/console/keys/{NO_ID}/rotate", 0, form={}
    ),
    ("POST", "/console/keys/{key_id:int}/revoke"): Route(
        Access.CONSOLE, f"/console/keys/{NO_ID}/revoke", 0, form={}
    ),
    ("GET", "/console/flags"): Route(Access.CONSOLE, "/console/flags", 0),
    ("GET", "/console/flags/{name}/{action}"): Route(
        Access.CONSOLE, "/console/flags/no:such-flag/disable", 0
    ),
    ("POST", "/console/flags/{name}/{action}"): Route(
        Access.CONSOLE, "/console/flags/no:such-flag/disable", 0, form={}
    ),
    ("GET", "/console/users"): Route(Access.CONSOLE, "/console/users", 0),
    ("GET", "/console/users/{user_id:int}/{action}"): Route(
        Access.CONSOLE, f"/console/users/{NO_ID}/delete", 0
    ),
    ("POST", "/console/users/{user_id:int}/{action}"): Route(
        Access.CONSOLE, f"/console/users/{NO_ID}/delete", 0, form={}
    ),
}
# Mounted static files (the offline docs' and the console's assets): served to
# anyone, no routes inside.
MOUNTS = {"/static-offline-docs", "/console/static"}


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str


PERMITTED = None
NO_CREDENTIAL_USER = Refusal(401, "Not authenticated")
NO_CREDENTIAL_EXPORT = Refusal(401, "Not authenticated: send an X-API-Key or a Bearer token")
BAD_TOKEN = Refusal(401, "Invalid or expired access token")
BAD_KEY = Refusal(401, "Invalid, expired or revoked API key")
NOT_ADMIN = Refusal(403, "Administrator privileges required")
KEY_NOT_ACCEPTED = Refusal(
    403, "API keys are accepted by the export endpoints only; this route needs a bearer token"
)
NO_FULL_SCOPE = Refusal(403, "API key lacks the 'users:export_full' scope")
KEY_AS_BEARER = Refusal(401, "Send API keys in the X-API-Key header, not as a Bearer token")

# The challenge of a 401: the one way each kind of route can be satisfied.
CHALLENGES = {
    Access.USER: "Bearer",
    Access.ADMIN: "Bearer",
    Access.EXPORT: 'Bearer, ApiKey header="X-API-Key"',
    Access.EXPORT_FULL: 'Bearer, ApiKey header="X-API-Key"',
}


@dataclass(frozen=True)
class Credential:
    """What a credential gets from each kind of protected route (None: let in)."""

    user: Refusal | None
    admin: Refusal | None
    export: Refusal | None
    export_full: Refusal | None

    def on(self, access: Access) -> Refusal | None:
        return {
            Access.USER: self.user,
            Access.ADMIN: self.admin,
            Access.EXPORT: self.export,
            Access.EXPORT_FULL: self.export_full,
        }[access]


def _everywhere(refusal: Refusal | None) -> Credential:
    return Credential(refusal, refusal, refusal, refusal)


NOTHING = Credential(
    NO_CREDENTIAL_USER, NO_CREDENTIAL_USER, NO_CREDENTIAL_EXPORT, NO_CREDENTIAL_EXPORT
)
# A user who is not (or no longer) an administrator: themself, nothing more.
PLAIN_USER = Credential(PERMITTED, NOT_ADMIN, NOT_ADMIN, NOT_ADMIN)
UNUSABLE_KEY = Credential(KEY_NOT_ACCEPTED, KEY_NOT_ACCEPTED, BAD_KEY, BAD_KEY)
FULL_KEY = Credential(KEY_NOT_ACCEPTED, KEY_NOT_ACCEPTED, PERMITTED, PERMITTED)

# Every credential of the matrix; the `world` fixture builds each one's headers.
CREDENTIALS: dict[str, Credential] = {
    # Nothing that counts as a credential.
    "none": NOTHING,
    "bearer-empty": NOTHING,
    "authorization-basic": NOTHING,
    "api-key-empty": NOTHING,
    # Bearer tokens that prove nothing.
    "jwt-garbage": _everywhere(BAD_TOKEN),
    "jwt-non-ascii": _everywhere(BAD_TOKEN),
    "jwt-oversized": _everywhere(BAD_TOKEN),
    "jwt-alg-none": _everywhere(BAD_TOKEN),
    "jwt-alg-none-with-signature": _everywhere(BAD_TOKEN),
    "jwt-hs384": _everywhere(BAD_TOKEN),
    "jwt-hs512": _everywhere(BAD_TOKEN),
    "jwt-rs256-header-hmac-signed": _everywhere(BAD_TOKEN),
    "jwt-wrong-secret": _everywhere(BAD_TOKEN),
    "jwt-tampered-sub": _everywhere(BAD_TOKEN),
    "jwt-tampered-exp": _everywhere(BAD_TOKEN),
    "jwt-no-exp": _everywhere(BAD_TOKEN),
    "jwt-no-sub": _everywhere(BAD_TOKEN),
    "jwt-expired": _everywhere(BAD_TOKEN),
    "jwt-not-yet-valid": _everywhere(BAD_TOKEN),
    "jwt-sub-integer": _everywhere(BAD_TOKEN),
    "jwt-sub-email": _everywhere(BAD_TOKEN),
    "jwt-sub-negative": _everywhere(BAD_TOKEN),
    "jwt-sub-unknown-id": _everywhere(BAD_TOKEN),
    "jwt-sub-beyond-int32": _everywhere(BAD_TOKEN),
    "jwt-sub-beyond-int64": _everywhere(BAD_TOKEN),
    "jwt-deleted-admin": _everywhere(BAD_TOKEN),
    "jwt-deactivated-admin": _everywhere(BAD_TOKEN),
    # Bearer tokens of live, active people.
    "jwt-admin": _everywhere(PERMITTED),
    "jwt-admin-lowercase-scheme": _everywhere(PERMITTED),
    "jwt-plain-user": PLAIN_USER,
    "jwt-demoted-admin": PLAIN_USER,
    # API keys that prove nothing (on bearer routes a key is the wrong kind, valid or not).
    "key-malformed": UNUSABLE_KEY,
    "key-non-ascii": UNUSABLE_KEY,
    "key-oversized": UNUSABLE_KEY,
    "key-unknown": UNUSABLE_KEY,
    "key-wrong-secret": UNUSABLE_KEY,
    "key-expired": UNUSABLE_KEY,
    "key-revoked": UNUSABLE_KEY,
    "key-rotated-out": UNUSABLE_KEY,
    "key-of-deactivated-admin": UNUSABLE_KEY,
    "key-of-deleted-admin": UNUSABLE_KEY,
    "key-of-demoted-admin": UNUSABLE_KEY,
    # Credentials in each other's header.
    "key-full-scope-as-bearer": Credential(
        KEY_NOT_ACCEPTED, KEY_NOT_ACCEPTED, KEY_AS_BEARER, KEY_AS_BEARER
    ),
    "jwt-admin-as-api-key": UNUSABLE_KEY,
    # Working API keys.
    "key-export-scope": Credential(KEY_NOT_ACCEPTED, KEY_NOT_ACCEPTED, PERMITTED, NO_FULL_SCOPE),
    "key-full-scope-from-cli": FULL_KEY,
    "key-full-scope-of-active-admin": FULL_KEY,
    "key-rotated-in-grace": FULL_KEY,
    "key-rotation-successor": FULL_KEY,
    # Both headers: exports let the key decide; bearer routes read the token only.
    "jwt-admin+key-revoked": Credential(PERMITTED, PERMITTED, BAD_KEY, BAD_KEY),
    "jwt-garbage+key-full-scope": Credential(BAD_TOKEN, BAD_TOKEN, PERMITTED, PERMITTED),
    "jwt-plain-user+key-full-scope": Credential(PERMITTED, NOT_ADMIN, PERMITTED, PERMITTED),
    "jwt-admin+key-export-scope": Credential(PERMITTED, PERMITTED, PERMITTED, NO_FULL_SCOPE),
}

Headers = dict[str, str | bytes]


@dataclass
class World:
    """One backend's app and the credentials of the matrix, made through the API."""

    client: TestClient
    target_id: int
    headers: dict[str, Headers] = field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(
    header: dict[str, Any], claims: dict[str, Any], signing: Callable[[bytes], bytes]
) -> str:
    """A JWT put together by hand, for the shapes PyJWT refuses to make."""
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(signing(signed.encode()))}"


def _retamper(token: str, **claims: Any) -> str:
    """`token` with claims changed and its signature kept."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, _b64(json.dumps({**decoded, **claims}).encode()), signature])


def _bearer(token: str | bytes) -> Headers:
    return {"Authorization": b"Bearer " + token if isinstance(token, bytes) else f"Bearer {token}"}


def _move_expiry(db_url: str, key_id: int, expires_at: datetime) -> None:
    """The clock passing a key's deadline without waiting for it, as the rotation tests do."""

    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(expires_at=expires_at)
                )
        finally:
            await engine.dispose()

    asyncio.run(run())


def _build_world(client: TestClient, db_url: str, settings: Settings) -> World:
    secret = settings.jwt_secret_key.get_secret_value()
    root = insert_user(db_url, "root@example.com", is_admin=True)
    plain = insert_user(db_url, "plain@example.com", name="Plain")
    leaving = {
        name: insert_user(db_url, f"{name}@example.com", is_admin=True)
        for name in ("deactivated", "deleted", "demoted")
    }
    as_root = bearer_headers(settings, root)

    def issue(headers: dict[str, str], **body: Any) -> dict[str, Any]:
        body = {"name": "matrix", "scopes": ["users:export_full"], **body}
        response = client.post("/api/v1/api-keys", json=body, headers=headers)
        assert response.status_code == 201, response.text
        issued: dict[str, Any] = response.json()
        return issued

    def rotate(key: dict[str, Any], grace_minutes: int) -> dict[str, Any]:
        path = f"/api/v1/api-keys/{key['id']}/rotate"
        response = client.post(path, json={"grace_minutes": grace_minutes}, headers=as_root)
        assert response.status_code == 201, response.text
        rotated: dict[str, Any] = response.json()
        return rotated

    # Tokens and keys of the three admins, taken while they were admins.
    leaving_tokens = {name: bearer_headers(settings, user) for name, user in leaving.items()}
    leaving_keys = {name: issue(bearer_headers(settings, user)) for name, user in leaving.items()}
    user_path = "/api/v1/users/{}".format
    for response in (
        client.patch(user_path(leaving["deactivated"]), json={"is_active": False}, headers=as_root),
        client.delete(user_path(leaving["deleted"]), headers=as_root),
        client.patch(user_path(leaving["demoted"]), json={"is_admin": False}, headers=as_root),
    ):
        assert response.status_code in (200, 204), response.text

    revoked = issue(as_root)
    assert client.delete(f"/api/v1/api-keys/{revoked['id']}", headers=as_root).status_code == 200
    expired_id, expired = create_api_key(db_url, ["users:export_full"], expires_in_days=1)
    _move_expiry(db_url, expired_id, utcnow() - timedelta(seconds=1))
    rotated_out = issue(as_root)
    successor = rotate(rotated_out, grace_minutes=5)
    _move_expiry(db_url, rotated_out["id"], utcnow() - timedelta(seconds=1))
    in_grace = issue(as_root)
    rotate(in_grace, grace_minutes=60)
    _, export_scope = create_api_key(db_url, ["users:export"])
    _, full_scope = create_api_key(db_url, ["users:export_full"])
    wrong_secret = full_scope[:-1] + ("A" if full_scope[-1] != "A" else "B")

    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    good_claims = {"sub": str(root), "iat": int(now.timestamp()), "exp": int(later.timestamp())}

    def hs(claims: dict[str, Any], algorithm: str = "HS256", key: str = secret) -> str:
        return jwt.encode(claims, key, algorithm=algorithm)

    def hmac256(data: bytes) -> bytes:
        return hmac.new(secret.encode(), data, hashlib.sha256).digest()

    plain_token = hs({**good_claims, "sub": str(plain)})
    expired_token = hs({**good_claims, "exp": int((now - timedelta(seconds=1)).timestamp())})
    admin_token = hs(good_claims)
    revoked_key = {"X-API-Key": revoked["secret"]}
    full_key = {"X-API-Key": full_scope}
    export_key = {"X-API-Key": export_scope}

    headers: dict[str, Headers] = {
        "none": {},
        "bearer-empty": {"Authorization": "Bearer "},
        "authorization-basic": {"Authorization": "Basic cm9vdEBleGFtcGxlLmNvbTpzZWNyZXQ="},
        "api-key-empty": {"X-API-Key": ""},
        "jwt-garbage": _bearer("not-a-token"),
        "jwt-non-ascii": _bearer("\xe9t\xe9".encode("latin-1")),
        "jwt-oversized": _bearer(admin_token + "A" * 16_000),
        "jwt-alg-none": _bearer(_token({"alg": "none", "typ": "JWT"}, good_claims, lambda _: b"")),
        "jwt-alg-none-with-signature": _bearer(
            _token({"alg": "none", "typ": "JWT"}, good_claims, hmac256)
        ),
        "jwt-hs384": _bearer(hs(good_claims, "HS384")),
        "jwt-hs512": _bearer(hs(good_claims, "HS512")),
        "jwt-rs256-header-hmac-signed": _bearer(
            _token({"alg": "RS256", "typ": "JWT"}, good_claims, hmac256)
        ),
        "jwt-wrong-secret": _bearer(hs(good_claims, key=secrets.token_urlsafe(32))),
        "jwt-tampered-sub": _bearer(_retamper(plain_token, sub=str(root))),
        "jwt-tampered-exp": _bearer(_retamper(expired_token, exp=good_claims["exp"])),
        "jwt-no-exp": _bearer(hs({"sub": str(root), "iat": good_claims["iat"]})),
        "jwt-no-sub": _bearer(hs({"iat": good_claims["iat"], "exp": good_claims["exp"]})),
        "jwt-expired": _bearer(expired_token),
        "jwt-not-yet-valid": _bearer(hs({**good_claims, "nbf": good_claims["exp"]})),
        "jwt-sub-integer": _bearer(hs({**good_claims, "sub": root})),
        "jwt-sub-email": _bearer(hs({**good_claims, "sub": "root@example.com"})),
        "jwt-sub-negative": _bearer(hs({**good_claims, "sub": "-1"})),
        "jwt-sub-unknown-id": _bearer(hs({**good_claims, "sub": str(NO_ID)})),
        "jwt-sub-beyond-int32": _bearer(hs({**good_claims, "sub": str(INT32_MAX + 1)})),
        "jwt-sub-beyond-int64": _bearer(hs({**good_claims, "sub": "9" * 30})),
        "jwt-deleted-admin": leaving_tokens["deleted"],
        "jwt-deactivated-admin": leaving_tokens["deactivated"],
        "jwt-admin": _bearer(admin_token),
        "jwt-admin-lowercase-scheme": {"Authorization": f"bearer {admin_token}"},
        "jwt-plain-user": _bearer(plain_token),
        "jwt-demoted-admin": leaving_tokens["demoted"],
        "key-malformed": {"X-API-Key": "not-a-key"},
        "key-non-ascii": {"X-API-Key": full_scope[:-1].encode() + b"\xe9"},
        "key-oversized": {"X-API-Key": full_scope + "A" * 16_000},
        "key-unknown": {"X-API-Key": "rvp_0123456789ab_" + "A" * 43},
        "key-wrong-secret": {"X-API-Key": wrong_secret},
        "key-expired": {"X-API-Key": expired},
        "key-revoked": revoked_key,
        "key-rotated-out": {"X-API-Key": rotated_out["secret"]},
        "key-of-deactivated-admin": {"X-API-Key": leaving_keys["deactivated"]["secret"]},
        "key-of-deleted-admin": {"X-API-Key": leaving_keys["deleted"]["secret"]},
        "key-of-demoted-admin": {"X-API-Key": leaving_keys["demoted"]["secret"]},
        "key-full-scope-as-bearer": _bearer(full_scope),
        "jwt-admin-as-api-key": {"X-API-Key": admin_token},
        "key-export-scope": export_key,
        "key-full-scope-from-cli": full_key,
        "key-full-scope-of-active-admin": {"X-API-Key": issue(as_root)["secret"]},
        "key-rotated-in-grace": {"X-API-Key": in_grace["secret"]},
        "key-rotation-successor": {"X-API-Key": successor["secret"]},
        "jwt-admin+key-revoked": {**_bearer(admin_token), **revoked_key},
        "jwt-garbage+key-full-scope": {**_bearer("not-a-token"), **full_key},
        "jwt-plain-user+key-full-scope": {**_bearer(plain_token), **full_key},
        "jwt-admin+key-export-scope": {**_bearer(admin_token), **export_key},
    }
    return World(client=client, target_id=plain, headers=headers)


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("auth-matrix")
    with migrated_database(request, tmp_path, request.param) as db_url:
        settings = load_settings(
            _env_file=None,
            env="test",
            db_url=db_url,
            log_level="warning",
            jwt_secret_key=secrets.token_urlsafe(48),  # 64 characters: enough for HS512
            # Budgets are not under test here: a permitted export must not meet a 429.
            export_rate_limit="10000/minute",
        )
        with TestClient(create_app(settings)) as client:
            yield _build_world(client, db_url, settings)


def test_every_route_is_in_the_matrix(world: World) -> None:
    routed: set[tuple[str, str]] = set()
    mounts: set[str] = set()
    for context in iter_route_contexts(world.client.app.routes):  # type: ignore[attr-defined]
        if isinstance(context.original_route, Mount):
            mounts.add(str(context.path))
            continue
        for method in context.methods or ():
            if method != "HEAD":  # Starlette's implicit HEAD of a GET
                routed.add((method, str(context.path)))
    assert routed == set(ROUTES)
    assert mounts == MOUNTS


def test_every_credential_is_built(world: World) -> None:
    assert set(world.headers) == set(CREDENTIALS)


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_answers_the_credential_as_documented(
    world: World, route: tuple[str, str], credential: str
) -> None:
    spec = ROUTES[route]
    path = spec.path.replace(TARGET, str(world.target_id))
    response = world.client.request(
        route[0],
        path,
        headers=world.headers[credential],
        json=spec.json,
        data=spec.form,
        follow_redirects=False,
    )
    if spec.access is Access.CONSOLE:
        # Whatever API credential comes along: sent to sign in, nothing served.
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/console/sign-in"
        assert response.content == b""
        return
    refusal = None if spec.access is Access.PUBLIC else CREDENTIALS[credential].on(spec.access)
    if refusal is None:
        assert response.status_code == spec.permitted, response.text
        return
    assert response.status_code == refusal.status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": refusal.detail}
    if refusal.status == 401:
        assert response.headers["WWW-Authenticate"] == CHALLENGES[spec.access]
    else:
        assert "WWW-Authenticate" not in response.headers


# What the OpenAPI document promises each kind of route: the credentials it
# offers (security), and a documented 401 with its challenge and 403.
SECURITY = {
    Access.PUBLIC: None,
    Access.USER: [{"OAuth2PasswordBearer": []}],
    Access.ADMIN: [{"OAuth2PasswordBearer": []}],
    Access.EXPORT: [{"APIKeyHeader": []}, {"OAuth2PasswordBearer": []}],
    Access.EXPORT_FULL: [{"APIKeyHeader": []}, {"OAuth2PasswordBearer": []}],
}


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_openapi_documents_the_credentials_of_the_route(
    world: World, route: tuple[str, str]
) -> None:
    method, path = route
    access = ROUTES[route].access
    document = world.client.get("/openapi.json").json()
    documented_path = re.sub(r":\w+}", "}", path)
    if documented_path not in document["paths"]:
        # The docs themselves and the console are not in the document.
        assert access in (Access.PUBLIC, Access.CONSOLE)
        return
    operation = document["paths"][documented_path][method.lower()]
    assert operation.get("security") == SECURITY[access]
    if access is Access.PUBLIC:
        return
    responses = operation["responses"]
    assert "WWW-Authenticate" in responses["401"]["headers"]
    if access in (Access.USER, Access.ADMIN):
        assert "X-API-Key" in responses["403"]["description"]
