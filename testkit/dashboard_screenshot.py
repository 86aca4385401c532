"""The README's screenshot of a finished run: `python -m testkit.dashboard_screenshot docs/dashboard.png`.

The same world as the browser tests (Azurite, the demo APIs, `fanout serve`, headless chromium): a run of
a few hundred IDs started from the page, shot once it has completed.
"""

from __future__ import annotations

import sys

from playwright.sync_api import expect, sync_playwright

from testkit.dashboard_world import CHROMIUM, CHROMIUM_ARGS, KEY, dashboard_world


def main(path: str) -> None:
    with dashboard_world() as world, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1140, "height": 900})
        page.goto(f"{world.base}/api/dashboard?code={KEY}")
        page.fill("#chunk-size", "5")
        page.fill("#max-concurrency", "4")
        page.click("#start-button")
        expect(page.locator("#run-state")).to_have_text("completed", timeout=120_000)
        page.locator("#start-answer").evaluate("element => element.hidden = true")
        page.screenshot(path=path, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1])
