"""`/playground`: a single page shipped with the gateway (`playground/index.html`, no build
step) that opens a session over `/ws` and runs code in it, for a newcomer's first contact;
and, for a browser that opens `/`, a link to it (API clients keep `/`'s JSON).

Both pages are open without the token: they hold nothing, and the playground asks for the
token itself when the server needs one. Kernel HTML is rendered in frames sandboxed without
scripts, and the page's own policy allows nothing from elsewhere.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_PAGE = Path(__file__).with_name("playground") / "index.html"
_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "connect-src 'self' ws: wss:; frame-src 'self' about:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ROOT_FOR_BROWSERS = """<!doctype html><meta charset="utf-8"><title>icotes execution gateway</title>
<p>This is the icotes execution gateway's API. Try it in the <a href="/playground">playground</a>,
or read the <a href="/docs">API docs</a>.</p>"""


@cache
def _page() -> str:
    return _PAGE.read_text()


@router.get("/playground")
async def playground() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": _POLICY, "X-Content-Type-Options": "nosniff"})


def wants_html(accept: str) -> bool:
    """A browser navigating (it asks for text/html first), not an API client."""
    return accept.split(",", 1)[0].strip().lower().startswith("text/html")
