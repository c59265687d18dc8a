"""The profile console in a real browser (Playwright driving Debian's Chromium) on a live server.

`portrait serve` runs as a subprocess on a free loopback port over a small synthetic shop, with
read and write keys; the browser uses the console as a person would and every figure it shows
is checked against the REST API's own answer. Without Chromium the tests skip, unless
``PORTRAIT_REQUIRE_BROWSER=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from helpers.servers import LiveServer

from offline.datasets.synthetic import generate

READ_KEY, WRITE_KEY = "console-read-key", "console-write-key"

pytestmark = pytest.mark.slow


def Server(data_dir: Path, log_file: Path) -> LiveServer:
    """`portrait serve` over a data dir with read and write keys, as a subprocess."""
    return LiveServer(["-c", "from offline.cli import main; main()", "serve"], log_file,
                      {"PORTRAIT_DATA_DIR": str(data_dir),
                       "PORTRAIT_API_READ_KEYS": f'["{READ_KEY}"]',
                       "PORTRAIT_API_WRITE_KEYS": f'["{WRITE_KEY}"]'})


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    require_browser()
    tmp = tmp_path_factory.mktemp("console")
    srv = Server(tmp / "data", tmp / "server.log")
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, headers={"X-API-Key": WRITE_KEY}, timeout=60) as c:
            for chunk in generate(60, 3_000, seed=11, chunk_size=1_000):
                r = c.post("/v1/events", json={"events": chunk})
                assert r.status_code == 200 and r.json()["rejected"] == 0, r.text
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.requested = []  # every URL the page asks for: the offline check reads it
    pg.on("request", lambda req: pg.requested.append(req.url))
    pg.set_default_timeout(20_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="module")
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": READ_KEY}, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def busy_user(api) -> str:
    """The synthetic user with the most events (enough for several pages)."""
    from collections import Counter

    counts = Counter(e["user_id"] for chunk in generate(60, 3_000, seed=11, chunk_size=1_000)
                     for e in chunk)  # fmt: skip
    user, n = counts.most_common(1)[0]
    assert n > 25
    return user


def _use_key(page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def _look_up(page, user: str) -> None:
    page.fill("#user-id", user)
    page.click("#lookup-button")


def _feature_cell(page, name: str) -> str:
    return page.locator(f'tr[data-feature="{name}"] td.fvalue').inner_text()


def _offsets(page) -> list[int]:
    page.wait_for_selector("#events-table tbody tr[data-offset]")
    cells = page.locator("#events-table tbody tr[data-offset]")
    return [int(cells.nth(i).get_attribute("data-offset")) for i in range(cells.count())]


def _next_params(body: dict) -> dict:
    if body.get("next_cursor"):
        return {"cursor": body["next_cursor"]}
    return {"before": body["next_before"]}


def test_lookup_shows_the_apis_profile_grouped_by_theme(page, server, api, busy_user) -> None:
    page.goto(f"{server.url}/console")
    _use_key(page, READ_KEY)
    _look_up(page, busy_user)
    page.wait_for_selector("#result:not([hidden])")
    profile = api.get(f"/v1/users/{busy_user}/profile").json()
    catalogue = api.get("/v1/features").json()
    assert busy_user in page.inner_text("#summary-title")
    assert _feature_cell(page, "event_count") == f"{profile['features']['event_count']:,} events"
    # every catalogue theme is a group, each feature with its catalogue description
    themes = {f["view"] for f in catalogue}
    shown = set(page.locator(".theme").evaluate_all("els => els.map(e => e.dataset.theme)"))
    assert shown == themes
    spend = next(f for f in catalogue if f["name"] == "spend_total")
    row = page.locator('tr[data-feature="spend_total"]')
    assert row.locator("td.fdesc").inner_text() == spend["description"]
    assert page.locator('.theme[data-theme="monetary"] tr[data-feature="spend_total"]').count() == 1
    # the model fields in words and bars
    assert page.inner_text("#segment-label").lower() == profile["segment"]["label"].lower()
    score = profile["propensity"]["score"]
    assert f"{score * 100:.1f} %" in page.inner_text("#propensity-words")
    assert page.locator("#reasons li").count() == len(profile["propensity"]["top_features"])
    assert page.locator("#reasons .bar").count() == len(profile["propensity"]["top_features"])
    # every request stayed on the server: nothing from a CDN
    hosts = {urlsplit(u).netloc for u in page.requested}
    assert hosts == {f"127.0.0.1:{server.port}"}, hosts
    # the key lives in this tab's sessionStorage only
    assert page.evaluate("sessionStorage.getItem('portrait.apiKey')") == READ_KEY
    if shot := os.environ.get("PORTRAIT_CONSOLE_SCREENSHOT"):  # the README's picture
        page.select_option("#page-size", "10")
        page.wait_for_function("() => document.querySelectorAll('#events-table tr[data-offset]')"
                               ".length === 10")  # fmt: skip
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.screenshot(path=shot, type="png")


def test_as_of_picker_and_slider_show_the_profile_as_of_that_time(
    page, server, api, busy_user
) -> None:
    events = api.get(f"/v1/users/{busy_user}/events", params={"limit": 1000}).json()["events"]
    middle = events[len(events) // 2]["ts"]  # newest first: half the history before it
    at = middle[:19]  # datetime-local: seconds, no zone (the console speaks UTC)
    page.goto(f"{server.url}/console")
    _use_key(page, READ_KEY)
    page.fill("#user-id", busy_user)
    page.fill("#as-of", at)
    page.check("input[name=mode][value=as_of]")
    page.click("#lookup-button")
    page.wait_for_selector("#result:not([hidden])")
    want = api.get(f"/v1/users/{busy_user}/profile", params={"as_of": at + "+00:00"}).json()
    page.wait_for_function(
        "t => document.querySelector('#summary-title').textContent.includes(t)",
        arg=at.replace("T", " "),
    )
    assert _feature_cell(page, "event_count") == f"{want['features']['event_count']:,} events"
    latest = api.get(f"/v1/users/{busy_user}/profile").json()
    assert want["features"]["event_count"] < latest["features"]["event_count"]
    # the slider spans the user's history; its start is the first event (up to the second)
    page.locator("#as-of-slider").fill("0")
    first = datetime.fromisoformat(latest["features"]["first_event_ts"])
    start = (first + timedelta(microseconds=-first.microsecond % 1_000_000)).isoformat()
    page.wait_for_function(
        "t => document.querySelector('#summary-title').textContent.includes(t)",
        arg=start[:19].replace("T", " "),
    )
    at_first = api.get(f"/v1/users/{busy_user}/profile", params={"as_of": start}).json()
    assert at_first["features"]["event_count"] >= 1
    assert _feature_cell(page, "event_count") == f"{at_first['features']['event_count']:,} events"
    assert page.input_value("#as-of") == start[:19]
    # back to latest
    page.check("input[name=mode][value=latest]")
    page.wait_for_function("() => document.querySelector('#summary-title').textContent"
                           ".includes('(latest)')")  # fmt: skip
    assert _feature_cell(page, "event_count") == f"{latest['features']['event_count']:,} events"


def test_events_page_older_and_newer(page, server, api, busy_user) -> None:
    page.goto(f"{server.url}/console")
    _use_key(page, READ_KEY)
    _look_up(page, busy_user)
    page.wait_for_selector("#result:not([hidden])")
    page.select_option("#page-size", "10")
    first = api.get(f"/v1/users/{busy_user}/events", params={"limit": 10}).json()
    second = api.get(f"/v1/users/{busy_user}/events",
                     params={"limit": 10, **_next_params(first)}).json()  # fmt: skip
    want1 = [e["offset"] for e in first["events"]]
    want2 = [e["offset"] for e in second["events"]]
    assert len(want1) == len(want2) == 10 and not set(want1) & set(want2)
    page.wait_for_function("n => document.querySelectorAll('#events-table tr[data-offset]')"
                           ".length === n", arg=10)  # fmt: skip
    assert _offsets(page) == want1
    assert page.is_disabled("#newer")
    page.click("#older")
    page.wait_for_function(f"() => document.querySelector('#events-table tr[data-offset]')"
                           f".dataset.offset === '{want2[0]}'")  # fmt: skip
    assert _offsets(page) == want2
    assert "page 2" in page.inner_text("#events-page")
    page.click("#newer")
    page.wait_for_function(f"() => document.querySelector('#events-table tr[data-offset]')"
                           f".dataset.offset === '{want1[0]}'")  # fmt: skip
    assert _offsets(page) == want1


def test_a_wrong_key_says_so_and_the_right_one_recovers(page, server, busy_user) -> None:
    page.goto(f"{server.url}/console")
    _look_up(page, busy_user)  # no key at all
    page.wait_for_selector("#message:not([hidden])")
    assert "needs an API key (401)" in page.inner_text("#message")
    _use_key(page, "not-a-key")  # re-runs the lookup with the new key
    page.wait_for_function("() => document.querySelector('#message').textContent"
                           ".includes('refused (401)')")  # fmt: skip
    assert page.is_hidden("#result")
    _use_key(page, READ_KEY)
    page.wait_for_selector("#result:not([hidden])")
    assert page.is_hidden("#message")


def test_an_unknown_user_is_named(page, server, busy_user) -> None:
    page.goto(f"{server.url}/console")
    _use_key(page, READ_KEY)
    _look_up(page, busy_user)
    page.wait_for_selector("#result:not([hidden])")
    _look_up(page, "nobody-like-this")
    page.wait_for_selector("#message:not([hidden])")
    text = page.inner_text("#message")
    assert "Unknown user" in text and "nobody-like-this" in text and "404" in text
    assert page.is_hidden("#result")


def test_a_shared_link_opens_the_profile(page, server, api, busy_user) -> None:
    page.goto(f"{server.url}/console")
    page.evaluate(f"sessionStorage.setItem('portrait.apiKey', '{READ_KEY}')")
    page.goto(f"{server.url}/console#user={busy_user}")
    page.reload()
    page.wait_for_selector("#result:not([hidden])")
    assert busy_user in page.inner_text("#summary-title")


@pytest.mark.parametrize("path, ready", [("/docs", ".swagger-ui .info .title"),
                                         ("/redoc", "redoc-wrapper, .api-content")])
def test_api_docs_render_from_the_server_alone(page, server, path, ready) -> None:
    page.goto(f"{server.url}{path}")
    page.wait_for_selector(ready)
    assert "portrait" in page.inner_text("body")
    # blob: and data: URLs are the page's own (ReDoc's web worker)
    hosts = {urlsplit(u).netloc for u in page.requested if not u.startswith(("data:", "blob:"))}
    assert hosts == {f"127.0.0.1:{server.port}"}, hosts
