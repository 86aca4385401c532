"""`GET /api/dashboard`: the dashboard page, one self-contained file (api/dashboard.html).

The page loads nothing but itself and talks only to the app's own API: its Content-Security-Policy lets
the browser fetch from this origin alone and run only the page's own script and style (a nonce per
answer). The key it was opened with (`?code=`) goes to the API in `x-functions-key` only, and no
referrer carries it anywhere.
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

import azure.functions as func

DASHBOARD_ROUTE = "dashboard"
_PAGE = Path(__file__).with_name("dashboard.html")


@functools.cache
def _page() -> str:
    return _PAGE.read_text(encoding="utf-8")


def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    """The page, with a fresh nonce for its script and style."""
    nonce = secrets.token_urlsafe(16)
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return func.HttpResponse(_page().replace("{nonce}", nonce), mimetype="text/html", headers=headers)
