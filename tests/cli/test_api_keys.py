"""`reviewpoint api-keys list|rotate|revoke`, run as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.config import Settings
from reviewpoint.db import create_engine, utcnow
from tests.cli.runner import assert_fits, assert_ok, cli, one_line_error, sql_rows
from tests.data import API_KEY_PUBLIC_FIELDS as PUBLIC_FIELDS
from tests.data import bearer_headers, create_api_key, insert_user, revoke_api_key

EXPORT = "/api/v1/users/export"
SECRET_FORMAT = re.compile(r"rvp_([0-9a-f]{12})_[0-9A-Za-z]{43}")


def _exports(client: TestClient, secret: str) -> int:
    return client.get(EXPORT, headers={"X-API-Key": secret}).status_code


def _listed(tmp_path: Path, db_url: str) -> dict[int, dict[str, object]]:
    result = cli(tmp_path, db_url, "api-keys", "list", "--json")
    assert_ok(result)
    return {key["id"]: key for key in json.loads(result.stdout)}


def _expire(db_url: str, key_id: int) -> None:
    """The clock passing a key's deadline, without waiting for it."""

    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(expires_at=utcnow() - timedelta(seconds=1))
                )
        finally:
            await engine.dispose()

    asyncio.run(run())


# rotate


def test_rotate_prints_the_new_secret_alone_and_the_old_one_works_until_its_grace_ends(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    old_id, old_secret = create_api_key(db_url, ["users:export"], name="nightly", expires_in_days=9)
    result = cli(tmp_path, db_url, "api-keys", "rotate", str(old_id), "--grace-minutes", "5")
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = SECRET_FORMAT.fullmatch(lines[0])
    assert match, lines[0]
    new_secret = lines[0]
    assert new_secret not in result.stderr
    assert f"rotated API key {old_id} 'nightly' into key" in result.stderr
    assert "store the new one now" in result.stderr

    listed = _listed(tmp_path, db_url)
    old, new = listed[old_id], listed[max(listed)]
    assert new["prefix"] == match.group(1)
    assert (new["name"], new["scopes"], new["rotated_from_id"]) == (
        "nightly",
        ["users:export"],
        old_id,
    )
    assert new["expires_at"] != old["expires_at"]  # the old key's deadline moved, not the new one's
    deadline = datetime.fromisoformat(str(old["expires_at"]))
    assert abs(deadline - (utcnow() + timedelta(minutes=5))) < timedelta(seconds=30)
    assert f"works until {deadline:%Y-%m-%d %H:%M:%SZ}" in result.stderr

    assert _exports(client, old_secret) == 200
    assert _exports(client, new_secret) == 200
    _expire(db_url, old_id)
    assert _exports(client, old_secret) == 401
    assert _exports(client, new_secret) == 200


def test_rotate_with_no_grace_stops_the_old_secret_at_once(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    old_id, old_secret = create_api_key(db_url, ["users:export"])
    result = cli(tmp_path, db_url, "api-keys", "rotate", str(old_id), "--grace-minutes", "0")
    assert_ok(result)
    assert "the old secret stops working now" in result.stderr
    assert _exports(client, old_secret) == 401
    assert _exports(client, result.stdout.strip()) == 200


def test_rotate_by_default_leaves_the_old_secret_an_hour(db_url: str, tmp_path: Path) -> None:
    old_id, _ = create_api_key(db_url, ["users:export"])
    assert_ok(cli(tmp_path, db_url, "api-keys", "rotate", str(old_id)))
    deadline = datetime.fromisoformat(str(_listed(tmp_path, db_url)[old_id]["expires_at"]))
    assert abs(deadline - (utcnow() + timedelta(minutes=60))) < timedelta(seconds=30)


def test_rotate_a_revoked_key_fails_in_one_line_and_issues_nothing(
    db_url: str, tmp_path: Path
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    revoke_api_key(db_url, key_id)
    line = one_line_error(cli(tmp_path, db_url, "api-keys", "rotate", str(key_id)))
    assert f"API key {key_id} is revoked" in line
    assert "issue a new key instead" in line
    assert sql_rows(db_url, "SELECT count(*) FROM api_keys") == [(1,)]


def test_rotate_an_expired_key_fails_in_one_line_and_issues_nothing(
    db_url: str, tmp_path: Path
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    _expire(db_url, key_id)
    line = one_line_error(cli(tmp_path, db_url, "api-keys", "rotate", str(key_id)))
    assert f"API key {key_id} is expired" in line
    assert sql_rows(db_url, "SELECT count(*) FROM api_keys") == [(1,)]


def test_rotate_an_unknown_key_fails_in_one_line(db_url: str, tmp_path: Path) -> None:
    result = cli(tmp_path, db_url, "api-keys", "rotate", "4242")
    assert result.returncode == 1
    assert "API key not found" in one_line_error(result)


def test_rotate_refuses_a_grace_out_of_range_before_touching_the_database(tmp_path: Path) -> None:
    database = tmp_path / "untouched.db"
    for minutes in ("-1", "10081", "soon"):
        result = cli(
            tmp_path,
            f"sqlite+aiosqlite:///{database}",
            "api-keys",
            "rotate",
            "1",
            "--grace-minutes",
            minutes,
        )
        assert "--grace-minutes" in one_line_error(result)
    assert not database.exists()


# revoke


def test_revoke_twice_says_already_revoked_and_succeeds(db_url: str, tmp_path: Path) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    assert_ok(cli(tmp_path, db_url, "api-keys", "revoke", str(key_id)))
    first = sql_rows(db_url, "SELECT revoked_at FROM api_keys")
    again = cli(tmp_path, db_url, "api-keys", "revoke", str(key_id))
    assert_ok(again)
    assert again.stdout == ""
    assert again.stderr.startswith(f"already revoked: API key {key_id} is already revoked (since ")
    assert len(again.stderr.splitlines()) == 1
    assert sql_rows(db_url, "SELECT revoked_at FROM api_keys") == first


# list


def test_list_json_shows_what_the_http_api_lists(
    db_url: str, client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    issued = client.post(
        "/api/v1/api-keys",
        json={"name": "by the admin", "scopes": ["users:export"]},
        headers=bearer_headers(settings, admin_id),
    ).json()
    cli_id, _ = create_api_key(db_url, ["users:export_full"], name="by the operator")
    over_http = client.get("/api/v1/api-keys", headers=bearer_headers(settings, admin_id)).json()

    result = cli(tmp_path, db_url, "api-keys", "list", "--json")
    assert_ok(result)
    listed = json.loads(result.stdout)
    assert listed == over_http
    assert all(set(key) == PUBLIC_FIELDS for key in listed)
    assert [(key["id"], key["created_by"], key["created_by_email"]) for key in listed] == [
        (issued["id"], admin_id, "admin@example.com"),
        (cli_id, None, None),
    ]
    # ISO 8601 with Z, as the API writes times.
    assert str(listed[0]["created_at"]).endswith("Z")


def test_list_never_shows_a_secret_or_its_digest(db_url: str, tmp_path: Path) -> None:
    key_id, secret = create_api_key(db_url, ["users:export"])
    rotated = cli(tmp_path, db_url, "api-keys", "rotate", str(key_id))
    assert_ok(rotated)
    secrets = [secret, rotated.stdout.strip()]
    digests = [row[0] for row in sql_rows(db_url, "SELECT secret_hash FROM api_keys")]
    for args in (["api-keys", "list"], ["api-keys", "list", "--json"]):
        output = cli(tmp_path, db_url, *args)
        assert_ok(output)
        printed = output.stdout + output.stderr
        assert "secret_hash" not in printed
        for value in [*secrets, *(s.rsplit("_", 1)[1] for s in secrets), *digests]:
            assert value not in printed


def test_list_table_shows_creator_rotation_and_state_of_each_key(
    db_url: str, client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    admin = bearer_headers(settings, admin_id)
    live = client.post(
        "/api/v1/api-keys", json={"name": "live", "scopes": ["users:export"]}, headers=admin
    ).json()
    revoked_id, _ = create_api_key(db_url, ["users:export"], name="gone")
    revoke_api_key(db_url, revoked_id)
    rotated = client.post(f"/api/v1/api-keys/{live['id']}/rotate", headers=admin).json()

    result = cli(tmp_path, db_url, "api-keys", "list")
    assert_ok(result)
    # Piped without COLUMNS, each key is one line: id, name, prefix, scopes, created, ...
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert list(rows) == [str(live["id"]), str(revoked_id), str(rotated["id"])]
    deadline = datetime.fromisoformat(
        _listed(tmp_path, db_url)[int(live["id"])]["expires_at"]  # type: ignore[arg-type]
    )
    assert live["prefix"] in rows[str(live["id"])]
    assert "by admin@example.com" in rows[str(live["id"])]
    assert f"live until {deadline:%Y-%m-%d %H:%M:%SZ}" in rows[str(live["id"])]
    assert "by cli" in rows[str(revoked_id)]
    assert re.search(r"revoked \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", rows[str(revoked_id)])
    assert f"by admin@example.com, replacing {live['id']}" in rows[str(rotated["id"])]
    assert rows[str(rotated["id"])].rstrip().endswith(" live")


def test_list_table_fits_80_columns_and_keeps_each_prefix_whole(
    db_url: str, tmp_path: Path
) -> None:
    insert_user(db_url, "a.rather.long.address.of.an.admin@example.com", is_admin=True)
    prefixes = []
    for name in ("nightly warehouse synchronisation for the finance team", "x"):
        key_id, secret = create_api_key(
            db_url, ["users:export", "users:export_full"], name=name, expires_in_days=30
        )
        match = SECRET_FORMAT.fullmatch(secret)
        assert match
        prefixes.append(match.group(1))
    assert_ok(cli(tmp_path, db_url, "api-keys", "rotate", str(key_id)))
    result = cli(tmp_path, db_url, "api-keys", "list", env={"COLUMNS": "80"})
    assert_ok(result)
    assert_fits(result.stdout)
    for prefix in prefixes:
        assert prefix in result.stdout
    assert "…" not in result.stdout


# data limits


def test_create_with_limits_lists_them_in_the_table_and_json(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    created = cli(
        tmp_path,
        db_url,
        "api-keys",
        "create",
        "--name",
        "partner",
        "--scope",
        "users:export_full",
        "--fields",
        "id,name,created_at",
        "--anonymized-only",
    )
    assert_ok(created)
    secret = created.stdout.strip()
    assert SECRET_FORMAT.fullmatch(secret)
    assert "(limits: fields id,name,created_at; anonymized only)" in created.stderr
    (listed,) = _listed(tmp_path, db_url).values()
    assert (listed["fields"], listed["anonymized_only"]) == (["id", "name", "created_at"], True)
    table = cli(tmp_path, db_url, "api-keys", "list")
    assert_ok(table)
    assert "fields id,name,created_at; anonymized only" in table.stdout
    # The key is limited over HTTP too.
    response = client.get("/api/v1/users/export-full", headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert response.text.splitlines() == ["id,name,created_at"]


def test_a_key_without_limits_lists_none(db_url: str, tmp_path: Path) -> None:
    create_api_key(db_url, ["users:export"], name="plain")
    result = cli(tmp_path, db_url, "api-keys", "list")
    assert_ok(result)
    assert result.stdout.splitlines()[2].split()[4] == "none"


def test_rotate_keeps_the_limits(db_url: str, tmp_path: Path) -> None:
    key_id, _ = create_api_key(
        db_url, ["users:export_full"], fields=["id", "is_admin"], anonymized_only=True
    )
    assert_ok(cli(tmp_path, db_url, "api-keys", "rotate", str(key_id)))
    _old, new = _listed(tmp_path, db_url).values()
    assert new["rotated_from_id"] == key_id
    assert (new["fields"], new["anonymized_only"]) == (["id", "is_admin"], True)


@pytest.mark.parametrize(
    ("fields", "named"), [("id,secret", "'secret'"), ("id,id", "'id' appears twice")]
)
def test_create_with_bad_fields_fails_in_one_line_and_issues_nothing(
    db_url: str, tmp_path: Path, fields: str, named: str
) -> None:
    result = cli(
        tmp_path,
        db_url,
        "api-keys",
        "create",
        "--name",
        "partner",
        "--scope",
        "users:export_full",
        "--fields",
        fields,
    )
    assert result.returncode != 0
    assert named in one_line_error(result)
    assert result.stdout == ""
    assert _listed(tmp_path, db_url) == {}
