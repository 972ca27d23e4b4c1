"""Who is calling, and may they: the dependencies routes declare.

Credentials travel two ways: `Authorization: Bearer <JWT>` for people (admins)
and `X-API-Key: rvp_...` for integrations. How they travel is read here; how
they are checked lives in `security` and `api_keys.service`.

Exports take either; every other protected route takes a bearer token only. A
key sent there alone is refused with 403, not 401: a 401 would ask for a
credential (RFC 9110 §15.5.2) when the caller already holds the one it has,
just of a kind this route never accepts. The README's Credentials section is
the contract; tests/contract/test_auth_matrix.py holds every route to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from reviewpoint import security
from reviewpoint.api_keys import service as api_keys
from reviewpoint.config import JwtSecret
from reviewpoint.db import Database, DatabaseDep
from reviewpoint.errors import FeatureDisabled, NotAuthenticated, NotPermitted
from reviewpoint.exports.limits import NO_LIMITS, KeyLimits
from reviewpoint.features.catalog import FEATURES
from reviewpoint.features.flags import FeatureFlagsDep
from reviewpoint.inputs import INT32_MAX
from reviewpoint.users import repository as users
from reviewpoint.users.models import User

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)
API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

BearerToken = Annotated[str | None, Depends(_bearer)]
ApiKeySecret = Annotated[str | None, Depends(_api_key)]

# The challenge of a 401 on a route that takes bearer tokens only: naming the
# API key there would ask for a credential the route refuses.
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
KEY_ON_BEARER_ROUTE = (
    "API keys are accepted by the export endpoints only; this route needs a bearer token"
)
KEY_AS_BEARER = "Send API keys in the X-API-Key header, not as a Bearer token"

# The 401 and 403 of every route behind CurrentUser or CurrentAdmin, for `responses=`.
BEARER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No bearer token, or one that is malformed, forged, expired, or "
        "for a deleted or deactivated user",
        "headers": {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    },
    403: {
        "description": "An API key instead of a user's token, in `X-API-Key` or as the "
        "bearer token (keys are for the exports only), or, on admin routes, a user who "
        "is not an administrator"
    },
}


def _user_id(subject: str | None) -> int | None:
    """The id a token names, if it can be one: a row id is 1..INT32_MAX (inputs.py)."""
    if subject is None or not (subject.isascii() and subject.isdigit()):
        return None
    user_id = int(subject)
    return user_id if 1 <= user_id <= INT32_MAX else None


async def _user_from_token(
    database: Database, jwt_secret: str, token: str, *, challenge: dict[str, str] | None = None
) -> User:
    user_id = _user_id(security.read_access_token(token, secret=jwt_secret))
    user = None
    if user_id is not None:
        # A short transaction of its own: the request's session (if any) takes
        # its connection only when the route needs it.
        async with database.transaction(read_only=True) as session:
            user = await users.get_live(session, user_id=user_id)
    if user is None or not user.is_active:
        raise NotAuthenticated("Invalid or expired access token", headers=challenge)
    return user


async def get_current_user(
    request: Request, database: DatabaseDep, jwt_secret: JwtSecret, token: BearerToken
) -> User:
    """The live, active user the bearer token names.

    An API key is never checked here. Sent alone, in its header or shaped like
    one in the bearer's place, it is refused as the wrong kind of credential
    (without a query, so the answer says nothing about the key); beside a
    token it is ignored. Its header is read from the request rather than
    declared, so the OpenAPI document does not offer keys for these routes.
    """
    if not token:
        if request.headers.get(API_KEY_HEADER):
            raise NotPermitted(KEY_ON_BEARER_ROUTE)
        raise NotAuthenticated("Not authenticated", headers=BEARER_CHALLENGE)
    if security.api_key_prefix(token) is not None:
        raise NotPermitted(KEY_ON_BEARER_ROUTE)
    return await _user_from_token(database, jwt_secret, token, challenge=BEARER_CHALLENGE)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_current_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise NotPermitted("Administrator privileges required")
    return user


CurrentAdmin = Annotated[User, Depends(get_current_admin)]


@dataclass(frozen=True)
class ExportPrincipal:
    """Who runs an export, as the audit log names them.

    `cli` is `reviewpoint export`: an operator with the database's credentials
    and no account, named by their operating-system user (id: the uid).
    """

    kind: Literal["api_key", "user", "cli"]
    id: int
    label: str
    # The user's email, the key's name or the OS user name, and the key's prefix
    # (never its secret).
    name: str
    key_prefix: str | None = None
    # A key's data limits (exports/limits.py); admins and the CLI have none.
    limits: KeyLimits = NO_LIMITS

    @property
    def key(self) -> str:
        """The name its rate and concurrency budgets are kept under."""
        return f"{self.kind}:{self.id}"


def require_scope(scope: str) -> Callable[..., Awaitable[ExportPrincipal]]:
    """An export credential: an API key holding `scope`, or an active admin's token.

    When both headers are sent the API key decides; it is never silently
    replaced by the other credential. The check runs in its own short
    transaction, over before the export opens its snapshot: an export never
    holds one pooled connection while it waits for another.
    """

    async def principal(
        request: Request,
        database: DatabaseDep,
        jwt_secret: JwtSecret,
        api_key: ApiKeySecret,
        token: BearerToken,
    ) -> ExportPrincipal:
        if api_key:
            async with database.transaction(read_only=True) as session:
                key = await api_keys.find_live(session, secret=api_key)
            if key is None:
                raise NotAuthenticated("Invalid, expired or revoked API key")
            caller = ExportPrincipal(
                kind="api_key",
                id=key.id,
                label=f"{key.name} ({key.prefix})",
                name=key.name,
                key_prefix=key.prefix,
                limits=KeyLimits(
                    fields=None if key.field_list is None else tuple(key.field_list),
                    anonymized_only=key.anonymized_only,
                ),
            )
            # Kept on the request before the scope check, so the audit trail
            # names a caller it refuses (exports/attempt.py).
            request.state.principal = caller
            if not api_keys.grants(key.scope_list, scope):
                raise NotPermitted(f"API key lacks the '{scope}' scope")
            api_keys.record_use(database, key)
            return caller
        if token:
            if security.api_key_prefix(token) is not None:
                # A key in the wrong header: 401, whose challenge says where it goes.
                raise NotAuthenticated(KEY_AS_BEARER)
            user = await _user_from_token(database, jwt_secret, token)
            caller = ExportPrincipal(kind="user", id=user.id, label=user.email, name=user.email)
            request.state.principal = caller
            if not user.is_admin:
                raise NotPermitted("Administrator privileges required")
            return caller
        raise NotAuthenticated("Not authenticated: send an X-API-Key or a Bearer token")

    return principal


def require_feature(name: str) -> Callable[[FeatureFlagsDep], None]:
    """Route dependency that answers 403 while `name` is switched off.

    Declared in the route's `dependencies`, which FastAPI resolves before any
    parameter, so a disabled feature is reported before credentials are checked.
    The flag comes from this worker's memory (features/flags.py): no query.
    """
    if name not in FEATURES:
        raise KeyError(f"unknown feature {name!r}")

    def check(flags: FeatureFlagsDep) -> None:
        if not flags.is_enabled(name):
            raise FeatureDisabled(name)

    return check
