"""`python -m gateway [--flags]`: serve with uvicorn; `--help` lists every setting."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import signal
from types import FrameType
from typing import Any

import uvicorn

from . import logs
from .app import create_app
from .settings import Settings

log = logging.getLogger("gateway")

# `?token=` in a logged URL would put the secret in every log that keeps it.
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*")


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True


def main() -> None:
    settings = Settings(_cli_parse_args=True, _cli_prog_name="python -m gateway")
    logs.configure(settings.log_level, settings.log_format)
    ensure_token(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per forwarded request
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # JSON lines: uvicorn's own loggers go through the root's handler too.
        **({"log_config": None} if settings.log_format == "json" else {}),
        ws="websockets-sansio",
        # Messages up to max_message_bytes get an error frame from us; far larger ones are
        # cut by uvicorn (close 1009) before they are even buffered.
        ws_max_size=4 * settings.max_message_bytes,
        # Compressing every frame costs CPU on each of them, most of which are small.
        ws_per_message_deflate=settings.ws_compression,
    )
    DrainingServer(config, app).run()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM drains (drain.py) before it stops; a second
    one stops at once."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = getattr(self.app.state, "drain", None)
        if sig != signal.SIGTERM or drain is None or self.should_exit:
            super().handle_exit(sig, frame)
        elif drain.started:  # the second: now
            self.force_exit = True
            super().handle_exit(sig, frame)
        else:
            self._captured_signals.append(sig)  # uvicorn raises it again once stopped
            asyncio.get_event_loop().call_soon_threadsafe(drain.begin, self._stop)

    def _stop(self) -> None:
        self.should_exit = True


def ensure_token(settings: Settings) -> None:
    """Beyond loopback, never serve without a token: make one and say how to use it."""
    if settings.token or settings.tokens or settings.allow_unauthenticated or _loopback(settings.host):
        return
    settings.token = secrets.token_urlsafe(32)
    url = f"http://{settings.host}:{settings.port}/?token={settings.token}"
    print(
        f"\n    No GATEWAY_TOKEN set and serving on {settings.host}: generated one.\n"
        f"    Use it as 'Authorization: Bearer {settings.token}', or open:\n        {url}\n",
        flush=True,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
