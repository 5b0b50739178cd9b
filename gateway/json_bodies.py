"""Request bodies are JSON whatever their Content-Type says, as Jupyter's servers read them.

Jupyter Server and Kernel Gateway parse a body as JSON without looking at its header, and
clients rely on it: `requests.post(url, data=json.dumps(...))` sends none, curl's `-d` says
form data. FastAPI would refuse such a body with a 422, so the header is set right here.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Receive, Scope, Send

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class JSONBodies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _WITH_BODY:
            headers = MutableHeaders(scope=scope)
            if not _is_json(headers.get("content-type", "")):
                headers["content-type"] = "application/json"
        await self.app(scope, receive, send)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
