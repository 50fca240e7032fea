"""`python -m bench.serve_with CLIENT`: the real proxy app (settings from the environment, as
`kimi-proxy serve`) on the production server stack, with the provider client CLIENT
(`bench/clients.py`). Only the client differs between the servers the decision compares."""

from __future__ import annotations

import sys

import uvicorn

from bench.clients import new_transport
from kimi_proxy.config.settings import load_settings
from kimi_proxy.server.app import configure_logging, create_app, tune_garbage_collector


def main() -> None:
    settings = load_settings()
    configure_logging(settings)
    transport = new_transport(sys.argv[1], settings.max_streams + 16)
    app = create_app(settings, transport=transport)
    tune_garbage_collector()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
