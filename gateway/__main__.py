"""`python -m gateway [--flags]`: serve with uvicorn; `--help` lists every setting."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import Settings


def main() -> None:
    settings = Settings(_cli_parse_args=True, _cli_prog_name="python -m gateway")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws="websockets-sansio",
    )


if __name__ == "__main__":
    main()
