"""The pass-through floor: the proxy's server stack forwarding bytes untouched.

`python -m bench.passthrough --upstream-url http://127.0.0.1:9100/v1 --port 9102`

A raw ASGI app on the same uvicorn (uvloop, httptools) with the proxy's own upstream transport
(`kimi_proxy.server.app.new_transport`, called as the proxy calls it): it reads the body,
posts it to the upstream's `/chat/completions` and streams the answer back as it arrives,
relayed as the proxy relays (each network read written from the read callback: `Connection.push`,
`BodyWriter`), with no parsing, validation or translation. What it adds over the direct upstream
is what the stack itself costs (an extra loopback hop, HTTP parsing both ways, the event loop);
what the proxy adds over it is the proxy's own work.
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import uvicorn

from kimi_proxy.config.settings import Settings, load_settings
from kimi_proxy.server.app import new_transport, tune_garbage_collector, upstream_timeout
from kimi_proxy.server.streaming import BodyWriter
from kimi_proxy.upstream.transport import ResponseStream


def provider_transport(upstream_url: str) -> httpx.AsyncBaseTransport:
    """The proxy's own provider pool, as `kimi-proxy serve` builds it."""
    return new_transport(_settings(upstream_url))


def _settings(upstream_url: str) -> Settings:
    return load_settings(upstream_url=upstream_url, api_key="bench")


def passthrough_app(transport: httpx.AsyncBaseTransport, upstream_url: str) -> Any:
    timeout = {"timeout": upstream_timeout(_settings(upstream_url)).as_dict()}
    target = httpx.URL(upstream_url.rstrip("/") + "/chat/completions")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        pieces = []
        more = True
        while more:
            message = await receive()
            pieces.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {"content-type": "application/json", "authorization": "Bearer bench"}
        body = b"".join(pieces)
        request = httpx.Request("POST", target, content=body, headers=headers, extensions=timeout)
        response = await transport.handle_async_request(request)
        try:
            kind = response.headers.get("content-type", "application/json").encode()
            start = {"status": response.status_code, "headers": [(b"content-type", kind)]}
            await send({"type": "http.response.start", **start})
            writer = BodyWriter()  # the proxy's relay: written from the read callback
            writer.bind(send)
            try:
                assert isinstance(response.stream, ResponseStream)
                await response.stream.push(writer.write)
            finally:
                await writer.drained()
        finally:
            await response.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9102)
    args = parser.parse_args()
    app = passthrough_app(provider_transport(args.upstream_url), args.upstream_url)
    tune_garbage_collector()  # the proxy's own process setup
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
