"""The network path to PostgreSQL drops while an export streams.

Unlike a killed backend (tests/exports/test_stream_properties.py,
tests/audit/test_audit_outcomes.py), no SQLSTATE arrives: the relay resets every
connection, request pool's included, and the driver sees its socket die. The
download must break off (no final chunk), the audit record say `failed`, no
connection stay lent out, and the next export come out whole on new connections.

SQLite has no network to lose; its mid-export fault, a page that cannot be read,
is tests/audit/test_audit_outcomes.py::test_a_database_failing_mid_stream_is_one_failed_record.
"""

from __future__ import annotations

import httpx
import pytest

from tests.audit.records import settled_rows
from tests.conftest import BACKENDS, eventually
from tests.data import insert_users
from tests.faults.calls import EXPORT_FULL, live_server_on, slow_reading_client
from tests.faults.proxy import TcpProxy

USERS = 10_000


@pytest.mark.parametrize(
    "db_url", [name for name in BACKENDS if name == "postgresql"], indirect=True
)
def test_postgresql_lost_mid_export_breaks_the_download_and_the_next_export_is_whole(
    db_url: str,
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(USERS)])
    with (
        TcpProxy.to_database(db_url) as proxy,
        live_server_on(proxy.url_through(db_url), made_in=db_url, export_chunk_rows=100) as live,
        slow_reading_client(live.server) as client,
    ):
        key = live.callers.key
        with client.stream("GET", EXPORT_FULL, headers=key) as response:
            assert response.status_code == 200
            pieces = response.iter_raw()
            received = next(pieces)
            while len(received) < 64 * 1024:
                received += next(pieces)
            proxy.cut()
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                for piece in pieces:
                    received += piece
        assert received.count(b"@example.com") < USERS, "the export was read to the end"

        assert eventually(lambda: live.server.export_connections_in_use() == 0)
        opened_before = proxy.accepted
        whole = client.get(EXPORT_FULL, headers=key)
        assert proxy.accepted > opened_before, "the cut connections were lent again"

    assert whole.status_code == 200
    assert whole.text.count("@example.com") == USERS + 1  # and the admin
    failed, completed = settled_rows(db_url, 2)
    assert (failed["outcome"], failed["status"]) == ("failed", 200)
    assert failed["detail"].startswith("database error: "), failed["detail"]
    assert 0 < failed["rows"] < USERS
    assert (completed["outcome"], completed["rows"]) == ("completed", USERS + 1)
