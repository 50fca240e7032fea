"""Graceful drain on SIGTERM: a deploy that cuts no stream.

On the first SIGTERM (or SIGINT) the proxy keeps its port open but stops taking work: `/ready`
answers 503 (a load balancer or Kubernetes takes the instance out of rotation) and a new
`POST /v1/messages` gets a 503 that clients and balancers retry elsewhere. Requests in flight
finish for up to the grace period (`KIMI_DRAIN_SECONDS`, default 120 s); whatever still runs
then ends with an `error` event, not a cut connection, and its reservation is settled like any
other. Then the server exits. A second signal exits at once.

One worker process: with `--workers N`, uvicorn's supervisor stops the workers its own way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from .state import ProxyState

log = logging.getLogger("kimi_proxy.drain")
POLL_SECONDS = 0.1
CUT_SECONDS = 1.0  # for the streams cut at the deadline to write their error events
DRAIN_LEFTOVER_SECONDS = 5  # uvicorn's own wait for connections once the drain is over


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ProxyState, grace: float) -> None:
        super().__init__(config)
        self.state = state
        self.grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.draining or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal, or not serving yet: now
            return
        self._captured_signals.append(sig)
        self.state.draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.ensure_future(self._wait_for_work())

    async def _wait_for_work(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        running = self.state.feed.in_flight
        log.info(  # a clean shutdown is no warning: only cutting streams is
            "draining: %d requests in flight, up to %.0f s for them to finish",
            len(running),
            self.grace,
        )
        while running and loop.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        if running:
            log.warning("drain deadline: ending %d streams with an error event", len(running))
            self.state.drain.cut_all()
            await asyncio.sleep(CUT_SECONDS)
        self.should_exit = True
