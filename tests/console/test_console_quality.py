"""What a user of the console notices (issue #11, item 8), on every page the app has.

The pages are found from the app's routes (reviewpoint.console.pages), so pages
added later are checked too. On each, at a laptop's width and a phone's: no
axe-core violation of impact serious or critical, no sideways scrolling and
every control within reach at 375 px, under 100 KB of assets, and the keyboard
reaching the skip link first, then the navigation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, Response

from reviewpoint.console.deps import SIGN_IN_PATH
from reviewpoint.console.pages import Fetched, discover, page_routes
from tests.conftest import LiveServer
from tests.console.conftest import Browser, signed_in
from tests.data import create_api_key, create_user

# axe-core, vendored from npm as a test asset (tests/console/assets/README.md).
AXE = (Path(__file__).parent / "assets" / "axe.min.js").read_text()
WIDTHS = (1024, 375)
PHONE = 375
ASSET_BUDGET = 100 * 1024
FAILING_IMPACTS = {"serious", "critical"}

# Every focusable control that lies outside the viewport and is not inside a box
# that scrolls sideways (a wide table's own scroller): out of reach on a phone.
_OUT_OF_REACH = """() => {
  const out = [];
  const scrolls = (el) => {
    for (let box = el.parentElement; box; box = box.parentElement) {
      const overflow = getComputedStyle(box).overflowX;
      const scroller = overflow === "auto" || overflow === "scroll";
      if (scroller && box.scrollWidth > box.clientWidth) return true;
    }
    return false;
  };
  const controls = "a[href], button, input:not([type=hidden]), select, textarea, summary";
  for (const el of document.querySelectorAll(controls)) {
    if (el.matches("a.skip") || el.getClientRects().length === 0) continue;
    const box = el.getBoundingClientRect();
    if ((box.left < -1 || box.right > innerWidth + 1) && !scrolls(el)) {
      const name = el.matches("a, button, summary") ? el.innerText : el.name || el.id;
      out.push(`${el.tagName.toLowerCase()} "${name.trim()}"`);
    }
  }
  return out;
}"""
_AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, targets: v.nodes.map((n) => n.target.join(" ")),
  }));
}"""
_FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const box = el.getBoundingClientRect();
  return {href: el.getAttribute("href"), skip: el.matches("a.skip"), inMain: !!el.closest("main"),
          visible: box.left >= 0 && box.right <= innerWidth && box.top >= 0 && box.width > 0};
}"""


def test_every_console_page_is_accessible_fits_a_phone_stays_small_and_works_by_keyboard(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    # Rows that pages link to: a live key (its rotate and revoke pages), a user
    # who is not an admin, and an export in the audit trail.
    key_id, secret = create_api_key(db_url, ["users:export"], name="nightly report")
    create_user(db_url, "user@example.com", name="Una User")
    exported = httpx.get(
        f"{live_server.url}/api/v1/users/export", headers={"X-API-Key": secret}, timeout=30
    )
    assert exported.status_code == 200
    base = live_server.url
    routes = page_routes(live_server.server.config.app)

    def scenario(page: Page) -> tuple[list[str], list[str]]:
        # Every visit loads every asset again, so each page's budget counts them all.
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        problems = [
            problem for width in WIDTHS for problem in _check(page, base, SIGN_IN_PATH, width)
        ]
        signed_in(page, base)

        def fetch(path: str) -> Fetched:
            response = page.request.get(base + path, max_redirects=0)
            return Fetched(
                response.status, response.headers.get("content-type", ""), response.text()
            )

        found = discover(routes, fetch)
        assert found.unreached == [], f"no page links to {found.unreached}: give them data"
        for path in found.pages:
            if path != SIGN_IN_PATH:  # seen signed out above
                problems += [p for width in WIDTHS for p in _check(page, base, path, width)]
        return found.pages, problems

    pages, problems = chromium.run(scenario)
    # The discovery found what is known to be there (and a key's confirmation page).
    assert {
        SIGN_IN_PATH,
        "/console/export",
        "/console/keys",
        f"/console/keys/{key_id}/rotate",
    } <= set(pages), pages
    assert problems == [], "\n".join(problems)


def _check(page: Page, base: str, path: str, width: int) -> list[str]:
    """What is wrong with one page at one width, as lines naming it."""
    where = f"{path} at {width} px:"
    page.set_viewport_size({"width": width, "height": 800})
    responses: list[Response] = []

    def collect(response: Response) -> None:
        responses.append(response)

    page.on("response", collect)
    try:
        page.goto(base + path, wait_until="networkidle")
    finally:
        page.remove_listener("response", collect)
    problems: list[str] = []

    loaded = {response.url: len(response.body()) for response in responses if response.status < 300}
    if sum(loaded.values()) >= ASSET_BUDGET:
        problems.append(f"{where} {sum(loaded.values()):,} bytes of assets: {loaded}")

    problems += _keyboard(page, where)

    if width == PHONE:
        scroll_width: int = page.evaluate("() => document.documentElement.scrollWidth")
        if scroll_width > PHONE + 1:
            problems.append(f"{where} scrolls sideways ({scroll_width} px wide)")
        problems += [f"{where} out of reach: {control}" for control in page.evaluate(_OUT_OF_REACH)]

    page.evaluate(AXE)  # as a CDP evaluation: the page's CSP forbids inline scripts
    violations: list[dict[str, Any]] = page.evaluate(_AXE_RUN)
    problems += [
        f"{where} axe {v['id']} ({v['impact']}) on {v['targets']}"
        for v in violations
        if v["impact"] in FAILING_IMPACTS
    ]
    return problems


def _keyboard(page: Page, where: str) -> list[str]:
    """Tab from the top: the skip link first (and visible while focused), then the
    navigation's links in order, or on a page without one, the page's content."""
    nav: list[str] = page.eval_on_selector_all(
        "header nav a", "links => links.map(a => a.getAttribute('href'))"
    )
    page.keyboard.press("Tab")
    first = page.evaluate(_FOCUSED)
    if not (first and first["skip"] and first["visible"]):
        return [f"{where} the first Tab reaches {first}, not a visible skip link"]
    if not page.locator(str(first["href"])).count():
        return [f"{where} the skip link points at {first['href']}, which is not on the page"]
    reached = []
    for _ in nav:
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        reached.append(focused["href"] if focused else None)
    if reached != nav:
        return [f"{where} Tab after the skip link reaches {reached}, not the navigation {nav}"]
    if not nav:
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if not (focused and focused["inMain"]):
            return [f"{where} Tab after the skip link reaches {focused}, not the page's content"]
    return []
