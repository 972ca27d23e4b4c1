"""Liveness, readiness against real (and really unreachable) databases, and offline docs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from reviewpoint.config import load_settings
from reviewpoint.main import create_app
from tests.conftest import BACKENDS, pg_execute

LIVE = "/api/v1/health"
READY = "/api/v1/health/ready"
EXPORT_PATHS = {
    "/api/v1/users/export",
    "/api/v1/users/export-full",
    "/api/v1/users/export-alive",
    "/api/v1/users/export-simple",
}


@contextmanager
def _client(db_url: str) -> Iterator[TestClient]:
    settings = load_settings(_env_file=None, env="test", db_url=db_url, log_level="warning")
    with TestClient(create_app(settings)) as client:
        yield client


def _unreachable_sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'reviewpoint.db'}"


def _unreachable_server(tmp_path: Path) -> str:
    # Port 1 (tcpmux) is privileged and unused: the connection is refused at once.
    return "postgresql+asyncpg://postgres@127.0.0.1:1/reviewpoint"


# ids free of "postgresql": conftest counts those as tests run on a real PostgreSQL.
UNREACHABLE = pytest.mark.parametrize(
    "unreachable",
    [
        pytest.param(_unreachable_sqlite, id="sqlite-in-missing-directory"),
        pytest.param(_unreachable_server, id="pg-server-refusing-connections"),
    ],
)


# Liveness


def test_liveness_is_200_ok(client: TestClient) -> None:
    response = client.get(LIVE)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@UNREACHABLE
def test_liveness_is_200_even_when_the_database_is_unreachable(
    tmp_path: Path, unreachable: Callable[[Path], str]
) -> None:
    with _client(unreachable(tmp_path)) as client:
        response = client.get(LIVE)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# Readiness


def test_readiness_is_200_when_the_database_answers(client: TestClient) -> None:
    response = client.get(READY)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@UNREACHABLE
def test_readiness_is_503_with_a_json_detail_when_the_database_is_unreachable(
    tmp_path: Path, unreachable: Callable[[Path], str]
) -> None:
    with _client(unreachable(tmp_path)) as client:
        response = client.get(READY)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": "Database unreachable"}


# Only a database server can lose a database under a running app and get it back.
@pytest.mark.parametrize(
    "db_url", [backend for backend in BACKENDS if backend == "postgresql"], indirect=True
)
def test_readiness_follows_the_database_going_away_and_coming_back(db_url: str) -> None:
    database = make_url(db_url).database
    hidden = f"{database}_hidden"
    with _client(db_url) as client:
        assert client.get(READY).status_code == 200  # a pooled connection now exists
        pg_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        pg_execute(f'ALTER DATABASE "{database}" RENAME TO "{hidden}"')
        try:
            down = client.get(READY)
        finally:
            pg_execute(f'ALTER DATABASE "{hidden}" RENAME TO "{database}"')
        back = client.get(READY)
    assert down.status_code == 503
    assert down.json() == {"detail": "Database unreachable"}
    assert back.status_code == 200
    assert back.json() == {"status": "ok"}


# Docs work with no internet: every asset comes from the app itself


class _AssetLinks(HTMLParser):
    """URLs a browser would fetch to render the page: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        url = attributes.get("href") if tag == "link" else attributes.get("src")
        if tag in {"script", "link", "img"} and url:
            self.urls.append(url)


def _asset_urls(html: str) -> list[str]:
    parser = _AssetLinks()
    parser.feed(html)
    return parser.urls


DOC_PAGES = pytest.mark.parametrize(
    ("page", "library"),
    [("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")],
    ids=["swagger-ui", "redoc"],
)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_page_is_html_that_names_no_other_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    for outside in ("http://", "https://", "cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis"):
        assert outside not in html
    assert "/openapi.json" in html
    urls = _asset_urls(html)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert url.startswith("/"), url


@DOC_PAGES
def test_doc_page_assets_are_served_by_the_app(client: TestClient, page: str, library: str) -> None:
    urls = _asset_urls(client.get(page).text)
    assert urls
    bodies: dict[str, bytes] = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content, url
        content_type = response.headers["content-type"]
        if url.endswith(".js"):
            assert "javascript" in content_type, (url, content_type)
        elif url.endswith(".css"):
            assert content_type.startswith("text/css"), (url, content_type)
        bodies[url] = response.content
    # The script is the real library, not an error page that happens to be 200.
    scripts = b"".join(body for url, body in bodies.items() if url.endswith(".js"))
    assert library.encode() in scripts


def test_swagger_oauth2_redirect_page_is_served(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "https://" not in response.text


def test_openapi_lists_the_four_export_endpoints(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths) >= EXPORT_PATHS
    for path in EXPORT_PATHS:
        assert "get" in paths[path], path
    for path in ("/api/v1/users/export", "/api/v1/users/export-full"):
        assert "text/csv" in paths[path]["get"]["responses"]["200"]["content"], path
