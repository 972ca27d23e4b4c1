"""Which console pages there are, read from the app's own routes.

The quality checks (tests/console/test_console_quality.py) and the server-time
bench (bench/console_bench.py) visit every page this finds, so a page added
later is checked without anyone listing it. A route with path parameters (a
key's confirmation page) is reached through the first link to it that a page
shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path

PREFIX = "/console"
# Files the browser saves (the API's exports), not pages; static files are a mount.
DOWNLOADS = "/console/download/"
_LINK = re.compile(r"""href=["'](/console[^"'#?]*)""")


@dataclass(frozen=True)
class PageRoute:
    path: str  # as declared: /console/keys/{key_id:int}/{action:str}
    pattern: re.Pattern[str]

    @property
    def has_parameters(self) -> bool:
        return "{" in self.path


@dataclass(frozen=True)
class Fetched:
    status: int
    content_type: str
    body: str


@dataclass
class Discovery:
    pages: list[str] = field(default_factory=list)  # paths to visit, in the order found
    # Not pages, with what they answered: redirects, htmx fragments.
    skipped: dict[str, str] = field(default_factory=dict)
    unreached: list[str] = field(default_factory=list)  # no page links to these routes


def page_routes(app: FastAPI) -> list[PageRoute]:
    """Every GET route under /console but the downloads."""
    found = []
    for route in iter_route_contexts(app.routes):
        path = route.path
        if (
            path is not None
            and "GET" in (route.methods or ())
            and (path == PREFIX or path.startswith(PREFIX + "/"))
            and not path.startswith(DOWNLOADS)
        ):
            found.append(PageRoute(path, compile_path(path)[0]))
    return found


def is_document(fetched: Fetched) -> bool:
    """A whole HTML page: an htmx fragment (a preview, a table's rows) is a piece of one."""
    return (
        fetched.status == 200
        and fetched.content_type.startswith("text/html")
        and fetched.body.lstrip()[:15].lower() == "<!doctype html>"
    )


def linked_paths(html: str) -> list[str]:
    return _LINK.findall(html)


def discover(routes: Sequence[PageRoute], fetch: Callable[[str], Fetched]) -> Discovery:
    """Fetch each route without parameters (`fetch` must not follow redirects), keep the
    whole pages, and follow their links to the routes that take parameters."""
    found = Discovery()
    waiting = [route for route in routes if route.has_parameters]
    queue = [route.path for route in routes if not route.has_parameters]
    while queue:
        path = queue.pop(0)
        fetched = fetch(path)
        if not is_document(fetched):
            found.skipped[path] = f"{fetched.status} {fetched.content_type}"
            continue
        found.pages.append(path)
        for link in linked_paths(fetched.body):
            for route in [route for route in waiting if route.pattern.match(link)]:
                waiting.remove(route)
                queue.append(link)
    found.unreached = [route.path for route in waiting]
    return found
