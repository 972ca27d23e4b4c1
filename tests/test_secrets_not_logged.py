"""No password, hash, API key, key digest or token reaches a log line, even on failure.

The app runs under a real uvicorn at its most talkative (the app at debug,
SQLAlchemy's SQL log and uvicorn's access log on), every record any logger
emits is captured as a handler would print it (message, exception and the
exception's whole chain), and then the requests most likely to leak a secret
are made: wrong passwords, forged and expired tokens, unknown, tampered and
revoked keys, a 422 carrying a password, and statements that carry a hash or a
key digest failing inside the database. SQLAlchemy puts a failed statement's
parameters into its exception text unless the engine has `hide_parameters`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from reviewpoint import security
from reviewpoint.config import Settings
from tests.conftest import LiveServer
from tests.data import (
    ADMIN_PASSWORD,
    create_api_key,
    create_user,
    execute_sql,
    revoke_api_key,
)

LOGIN = "/api/v1/auth/login"
USERS = "/api/v1/users"
API_KEYS = "/api/v1/api-keys"
EXPORT = "/api/v1/users/export"
# Shapes of secrets this service makes, whoever's they are.
SECRET_SHAPES = {
    "Argon2 hash": re.compile(r"\$argon2"),
    "API key": re.compile(r"rvp_[0-9a-f]{12}_[0-9A-Za-z]"),
    "SHA-256 digest": re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])"),
    "JWT": re.compile(r"eyJ[0-9A-Za-z_-]{8,}"),
}
WATCHED_LOGGERS = ["", "reviewpoint", "sqlalchemy", "uvicorn", "uvicorn.error", "uvicorn.access"]
MORE_TALKATIVE = {"sqlalchemy.engine": logging.INFO, "uvicorn.access": logging.INFO}


class Capture(logging.Handler):
    """Each record as text: what any formatter could print of it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        # format() adds the traceback, whose text includes every chained exception.
        self.lines.append(f"{self.format(record)} {record.args!r} {record.__dict__!r}")


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"log_level": "debug"})) as live:
        yield live


@pytest.fixture
def captured(server: LiveServer) -> Iterator[Capture]:
    """Attached after the server configured its logging, which replaces handlers."""
    capture = Capture()
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    for logger in loggers:
        logger.addHandler(capture)
    levels = {name: logging.getLogger(name).level for name in MORE_TALKATIVE}
    for name, level in MORE_TALKATIVE.items():
        logging.getLogger(name).setLevel(level)
    yield capture
    for logger in loggers:
        logger.removeHandler(capture)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _break_user_inserts(db_url: str) -> None:
    """Make every INSERT into users fail inside the database, with a non-integrity error
    (an integrity error would be taken for a duplicate email: a 409, not logged)."""
    if db_url.startswith("sqlite"):
        execute_sql(
            db_url,
            "CREATE TRIGGER users_insert_fails BEFORE INSERT ON users "
            "BEGIN INSERT INTO no_such_table VALUES (1); END",
        )
        return
    execute_sql(
        db_url,
        "CREATE FUNCTION users_insert_fails() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'inserts into users are switched off'; END $$",
    )
    execute_sql(
        db_url,
        "CREATE TRIGGER users_insert_fails BEFORE INSERT ON users "
        "FOR EACH ROW EXECUTE FUNCTION users_insert_fails()",
    )


def test_no_secret_reaches_a_log_line(
    server: LiveServer, captured: Capture, settings: Settings, db_url: str
):
    admin_id = create_user(db_url, "admin@example.com", password=ADMIN_PASSWORD, is_admin=True)
    _, key = create_api_key(db_url, ["users:export"])
    revoked_id, revoked = create_api_key(db_url, ["users:export"], name="revoked")
    revoke_api_key(db_url, revoked_id)
    secret_key = settings.jwt_secret_key.get_secret_value()
    expired = security.create_access_token(
        subject=str(admin_id), secret=secret_key, lifetime=timedelta(seconds=-60)
    )
    forged = security.create_access_token(
        subject=str(admin_id), secret="not-the-servers-secret-" * 2, lifetime=timedelta(hours=1)
    )
    tampered = key[:-4] + "AAAA"
    unknown = security.generate_api_key().secret
    wrong_password = "not-the-admin-password-77"
    new_password = "new-user-password-88"
    sent = [ADMIN_PASSWORD, wrong_password, new_password, "short-7"]
    sent += [expired, forged, key, revoked, tampered, unknown]
    sent += [security.hash_api_key(k) for k in (key, revoked, tampered, unknown)]

    with httpx.Client(base_url=server.url, timeout=30) as client:
        for username, password in [
            ("admin@example.com", wrong_password),
            ("nobody@example.com", wrong_password),
        ]:
            response = client.post(LOGIN, data={"username": username, "password": password})
            assert response.status_code == 401
        response = client.post(
            LOGIN, data={"username": "admin@example.com", "password": ADMIN_PASSWORD}
        )
        token = response.json()["access_token"]
        sent.append(token)
        admin = {"Authorization": f"Bearer {token}"}

        for bad in (expired, forged):
            bearer = {"Authorization": f"Bearer {bad}"}
            assert client.get("/api/v1/auth/me", headers=bearer).status_code == 401
            assert client.get(EXPORT, headers=bearer).status_code == 401
        for bad in (revoked, tampered, unknown):
            assert client.get(EXPORT, headers={"X-API-Key": bad}).status_code == 401
        assert client.get(EXPORT, headers={"X-API-Key": key}).status_code == 200

        too_short = {"email": "new@example.com", "password": "short-7"}
        assert client.post(USERS, json=too_short, headers=admin).status_code == 422

        # Statements carrying a key digest or a password hash fail in the database.
        execute_sql(db_url, "ALTER TABLE api_keys RENAME TO api_keys_gone")
        issue = {"name": "nightly", "scopes": ["users:export"]}
        assert client.post(API_KEYS, json=issue, headers=admin).status_code >= 500
        assert client.get(EXPORT, headers={"X-API-Key": key}).status_code >= 500
        _break_user_inserts(db_url)
        new_user = {"email": "new@example.com", "password": new_password}
        assert client.post(USERS, json=new_user, headers=admin).status_code >= 500

    # The failures were logged as errors with their statements: a leak would be there.
    errors = [line for line in captured.lines if " ERROR " in line.partition("\n")[0]]
    for statement in ("INSERT INTO api_keys", "INSERT INTO users"):
        assert any(statement in line and "Traceback" in line for line in errors), statement
    log = "\n".join(captured.lines)
    for secret in sent:
        assert secret not in log, f"a submitted secret was logged: {secret[:12]}..."
    for what, shape in SECRET_SHAPES.items():
        found = shape.search(log)
        context = log[max(found.start() - 200, 0) : found.end() + 40] if found else ""
        assert found is None, f"{what} in the log: ...{context}"
