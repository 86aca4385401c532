"""The dashboard in a real browser (headless Debian chromium, Playwright) against `python -m fanout serve`:
what the page shows is what the API answers, its buttons do what the API does, and it talks to nothing
but the app, the function key only ever in `x-functions-key`."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from testkit.dashboard_world import CHROMIUM, CHROMIUM_ARGS, IDS, KEY, DashboardWorld, dashboard_world

WAIT_MS = 20_000


@pytest.fixture(scope="module")
def world() -> Iterator[DashboardWorld]:
    with dashboard_world() as made:
        yield made


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def requests_made() -> list[Request]:
    return []


@pytest.fixture
def page(world: DashboardWorld, browser: Browser, requests_made: list[Request]) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.on("request", lambda request: requests_made.append(request))
    opened.on("dialog", lambda dialog: dialog.accept())
    opened.goto(f"{world.base}/api/dashboard?code={KEY}")
    yield opened
    _assert_only_the_app_was_asked(world, opened, requests_made)
    context.close()


def _assert_only_the_app_was_asked(world: DashboardWorld, page: Page, requests_made: list[Request]) -> None:
    """Every request went to the app; after the page's own address, none carried the key in its URL or a
    referrer, and the key is nowhere in the DOM, the browser's storage or its cookies."""
    assert requests_made, "the page made no request"
    assert [r.url for r in requests_made if not r.url.startswith(world.base + "/")] == []
    document, *calls = requests_made
    assert document.url == f"{world.base}/api/dashboard?code={KEY}"
    assert calls and all(call.headers.get("x-functions-key") == KEY for call in calls)
    assert [r.url for r in calls if KEY in r.url or KEY in (r.headers.get("referer") or "")] == []
    assert KEY not in page.content()
    assert page.evaluate("() => localStorage.length + sessionStorage.length + document.cookie.length") == 0


def _start(page: Page, **fields: str) -> str:
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#start-button")
    expect(page.locator("#start-answer")).to_contain_text("HTTP 202", timeout=WAIT_MS)
    run_id = page.locator("#run-name").inner_text()
    assert run_id
    return run_id


def test_a_run_started_from_the_page_completes_and_shows_100_percent(world: DashboardWorld, page: Page) -> None:
    run_id = _start(page, **{"chunk-size": "50"})

    expect(page.locator("#run-state")).to_have_text("completed", timeout=WAIT_MS)
    expect(page.locator("#progress-text")).to_contain_text(f"100% · {IDS} of {IDS} IDs enqueued")
    expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#grid-summary")).to_contain_text("6 chunks, one to a cell: 6 ingested")
    status = world.api("GET", f"ingestions/{run_id}").json()
    assert (status["state"], status["messages"]["enqueued"]) == ("completed", IDS)


def test_cancel_from_the_page_leaves_the_run_cancelled_with_the_apis_counts(world: DashboardWorld, page: Page) -> None:
    run_id = _start(page, source="slow", **{"chunk-size": "10"})
    page.click("#cancel")

    expect(page.locator("#answer")).to_contain_text("HTTP 202", timeout=WAIT_MS)
    expect(page.locator("#run-state")).to_have_text("cancelled", timeout=WAIT_MS)
    status = world.api("GET", f"ingestions/{run_id}").json()
    assert status["state"] == "cancelled"
    page.click(f"text={run_id}")  # a fresh look: what the page shows now is what the API answers
    expect(page.locator("#progress-text")).to_contain_text(
        f"{status['messages']['enqueued']} of {status['messages']['fetched']} IDs enqueued", timeout=WAIT_MS
    )


def test_a_failed_chunks_error_is_shown_and_a_redrive_from_the_page_completes_it(
    world: DashboardWorld, page: Page
) -> None:
    page.click(f"text={world.failed_run}")
    expect(page.locator("#run-state")).to_have_text("failed", timeout=WAIT_MS)
    expect(page.locator("#failed-chunks")).to_contain_text(re.compile(r"chunk 1: .+"))

    page.click("#redrive")

    expect(page.locator("#answer")).to_contain_text(re.compile(r'"scheduled": \[\s+1[,\s]'), timeout=WAIT_MS)
    expect(page.locator("#run-state")).to_have_text("completed", timeout=WAIT_MS)
    expect(page.locator("#failed-chunks")).to_have_text("none")
    assert world.api("GET", f"ingestions/{world.failed_run}").json()["messages"]["enqueued"] == IDS


def test_a_purge_of_a_running_run_shows_the_409s_detail(world: DashboardWorld, page: Page) -> None:
    run_id = _start(page, source="slow", **{"chunk-size": "10"})
    page.click("#purge")

    answer = page.locator("#answer")
    expect(answer).to_contain_text("HTTP 409 Conflict", timeout=WAIT_MS)
    detail = world.api("DELETE", f"ingestions/{run_id}").json()["detail"]
    expect(answer).to_contain_text(detail)
    world.api("POST", f"ingestions/{run_id}/cancel")


def test_the_list_pages_with_its_continuation(world: DashboardWorld, page: Page) -> None:
    page.fill("#limit", "1")
    page.press("#limit", "Tab")  # leaving the field changes it: the list starts again from its first page
    expect(page.locator("#list-info")).to_contain_text("Page 1: 1 runs, older ones", timeout=WAIT_MS)
    first = page.locator("#runs tr").inner_text()

    page.click("#older")
    expect(page.locator("#list-info")).to_contain_text("Page 2: 1 runs", timeout=WAIT_MS)
    assert page.locator("#runs tr").inner_text() != first
    page.click("#newer")
    expect(page.locator("#list-info")).to_contain_text("Page 1", timeout=WAIT_MS)
    assert page.locator("#runs tr").inner_text() == first


def test_a_failed_look_at_a_running_run_shows_why_and_the_page_keeps_looking(world: DashboardWorld, page: Page) -> None:
    run_id = _start(page, source="slow", **{"chunk-size": "10"})
    looks: list[str] = []

    def fail_the_first_looks(route: Route) -> None:
        looks.append(route.request.url)
        if len(looks) == 1:
            route.abort("connectionreset")
        elif len(looks) == 2:
            route.fulfill(status=503, body="Service Unavailable", content_type="text/plain")
        else:
            route.continue_()

    page.route(lambda url: url.endswith(f"/ingestions/{run_id}"), fail_the_first_looks)
    expect(page.locator("#run-state")).to_contain_text("no answer from the app", timeout=WAIT_MS)
    expect(page.locator("#run-state")).to_contain_text("HTTP 503: Service Unavailable (looking again", timeout=WAIT_MS)
    world.api("POST", f"ingestions/{run_id}/cancel")  # the page learns of it only by looking again

    expect(page.locator("#run-state")).to_have_text("cancelled", timeout=WAIT_MS)
    assert len(looks) >= 3


def test_a_list_that_got_no_answer_says_so_and_loads_on_refresh(world: DashboardWorld, page: Page) -> None:
    expect(page.locator("#list-info")).to_contain_text("Page 1", timeout=WAIT_MS)
    page.route(lambda url: "/ingestions?" in url, lambda route: route.abort("connectionrefused"))
    page.click("#refresh-list")
    expect(page.locator("#list-info")).to_contain_text("no answer from the app", timeout=WAIT_MS)

    page.unroute_all()
    page.click("#refresh-list")
    expect(page.locator("#list-info")).to_contain_text("Page 1", timeout=WAIT_MS)


ODD_LOOKS = [  # each answers one look at a running run, a real answer between two of them
    lambda route: route.abort("connectionreset"),
    lambda route: route.fulfill(status=500, content_type="application/problem+json",
                                body='{"status": 500, "detail": "storage is down"}'),  # no Retry-After
    lambda route: route.fulfill(status=200, content_type="text/html", body="<html>sign in</html>"),
    lambda route: route.fulfill(status=200, content_type="application/json", body="{}", headers={"Retry-After": "0"}),
    lambda route: route.fulfill(status=503, content_type="text/plain", body="busy", headers={"Retry-After": "1e400"}),
]  # fmt: skip


def test_whatever_a_look_answers_the_page_looks_again_no_sooner_than_a_second_until_the_end(
    world: DashboardWorld, page: Page
) -> None:
    run_id = _start(page, source="slow", **{"chunk-size": "10"})
    looks: list[float] = []
    maps: list[float] = []

    def status(route: Route) -> None:
        looks.append(time.monotonic())
        odd = len(looks) % 2 == 1 and len(looks) // 2 < len(ODD_LOOKS)
        ODD_LOOKS[len(looks) // 2](route) if odd else route.continue_()

    def chunk_map(route: Route) -> None:
        maps.append(time.monotonic())
        if len(maps) <= 2:
            route.fulfill(status=200, content_type="text/html" if len(maps) == 1 else "application/json",
                          body="<html>sign in</html>" if len(maps) == 1 else '{"ranges": 7}')  # fmt: skip
        else:
            route.continue_()

    page.route(lambda url: url.endswith(f"/ingestions/{run_id}"), status)
    page.route(lambda url: url.endswith(f"/ingestions/{run_id}/chunks"), chunk_map)
    page.click(f"text={run_id}")  # a fresh look: the first answer is an odd one
    deadline = time.monotonic() + 40
    while len(looks) < 2 * len(ODD_LOOKS) + 1 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    world.api("POST", f"ingestions/{run_id}/cancel")

    expect(page.locator("#run-state")).to_have_text("cancelled", timeout=WAIT_MS)
    assert len(looks) >= 2 * len(ODD_LOOKS) + 1, f"the page stopped looking after {len(looks)} looks"
    gaps = [later - earlier for earlier, later in itertools.pairwise(looks)]
    assert min(gaps) >= 0.9, gaps
