"""Per-process state shared by the routes. Nothing here is per-conversation: workers are
stateless and scale out behind any load balancer."""

from __future__ import annotations

import asyncio
import functools
import gc
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from kimi_proxy.agent.tools import LocalTools
from kimi_proxy.config.settings import Settings
from kimi_proxy.documents.expand import expand_pdfs
from kimi_proxy.errors import OverloadedError
from kimi_proxy.gateway.runtime import GatewayRuntime
from kimi_proxy.gateway.shared_view import SharedView
from kimi_proxy.protocol.anthropic import Request
from kimi_proxy.providers.pool import Pool
from kimi_proxy.search.client import Searcher
from kimi_proxy.web.feed import Feed

from .bodies import BodiesInFlight
from .observability import Metrics
from .streaming import Drain
from .tracing import Tracing

REMEMBERED = 256
FREE_AFTER = 0.002  # seconds: what a request let go of is freed this long after (`free_later`)
P = ParamSpec("P")
T = TypeVar("T")


def without_collections(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(...)` with the cyclic collector paused: a large body's objects, all alive until it
    is done, would set off full collections that walk them (~100 ms each, holding the GIL)."""
    gc.disable()
    try:
        return work(*args, **kwargs)
    finally:
        gc.enable()


class Descriptions:
    """Image digest → its description, the most recent `REMEMBERED`."""

    def __init__(self) -> None:
        self._known: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        found = self._known.get(key)
        if found is not None:
            self._known.move_to_end(key)
        return found

    def put(self, key: str, text: str) -> None:
        self._known[key] = text
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)


@dataclass(slots=True)
class ProxyState:
    settings: Settings
    pool: Pool
    local_tools: LocalTools | None = None
    metrics: Metrics = field(default_factory=Metrics)
    active_streams: int = 0
    feed: Feed = field(default_factory=Feed)
    draining: bool = False  # SIGTERM came: no new work (drain.py)
    drain: Drain = field(default_factory=Drain)  # the streams to end at the drain's deadline
    #: The gateway's users, their limits and usage (gateway/): none without users or Redis.
    gateway: GatewayRuntime = field(default_factory=lambda: GatewayRuntime.build(None, None))
    #: The request bodies being read and parsed (bodies.py), bounded by KIMI_MAX_BODIES_BYTES.
    bodies: BodiesInFlight = field(default_factory=lambda: BodiesInFlight(128 * 2**20))
    #: OpenTelemetry (tracing.py): None when no OTLP endpoint is configured.
    tracing: Tracing | None = None
    #: The backend that runs `web_search` (search/): None when none is configured.
    searcher: Searcher | None = None
    #: How many first pages of a PDF also go as images to a model that reads them.
    page_images: int = 5
    #: Descriptions of images for text-only models (vision.py), by the image's digest.
    descriptions: Descriptions = field(default_factory=lambda: Descriptions())
    #: Reads PDFs off the event loop; one thread, as pdfium is not thread-safe.
    pdf_reader: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="kimi-pdf")
    )

    #: Validates, translates and measures large bodies off the event loop (large_bodies.py).
    large_bodies: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="kimi-large-body")
    )

    async def off_loop(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(...)` on the large-body thread."""
        loop = asyncio.get_running_loop()
        work_now = functools.partial(without_collections, work, *args, **kwargs)
        return await loop.run_in_executor(self.large_bodies, work_now)

    #: What requests no longer need, let go of `FREE_AFTER` seconds later (`free_later`).
    graveyard: list[object] = field(default_factory=list)
    free_timer: asyncio.TimerHandle | None = None

    def free_later(self, thing: object) -> None:
        """Let go of `thing` a little later rather than now. A parsed 50 KB request is thousands
        of objects, ~25 µs to free: not on the way to the provider, nor on the way back. No
        provider answers within `FREE_AFTER` (a fast one takes tens of ms), so they are freed
        while it thinks; one that answers sooner (a local model) has its first token out first."""
        if self.free_timer is None:
            self.free_timer = asyncio.get_running_loop().call_later(FREE_AFTER, self.free_now)
        self.graveyard.append(thing)

    def free_now(self) -> None:
        """What is waiting to be freed, now. Every stream's end (its slot's release) calls it
        before the end is written: a stream shorter than `FREE_AFTER` (the benchmark's take
        2 ms) would otherwise have it freed, and the timer go off, in the way of the client's
        next request."""
        if self.free_timer is not None:
            self.free_timer.cancel()
            self.free_timer = None
        self.graveyard.clear()

    @property
    def view(self) -> SharedView | None:
        """With Redis: the dashboard's last requests and the sessions' totals of every
        instance (the web routes read it before this instance's own feed)."""
        return self.gateway.view

    async def read_pdfs(self, request: Request) -> Request:
        """The request with its PDFs read into text and page images (documents/)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pdf_reader, expand_pdfs, request, self.page_images)

    def take_stream_slot(self) -> Callable[[], None]:
        """Count a stream against `KIMI_MAX_STREAMS`; beyond it answer 529 at once, never
        queue. Returns the slot's release (idempotent)."""
        limit = self.settings.max_streams
        if self.active_streams >= limit:
            raise OverloadedError(
                f"The proxy is at its limit of {limit} concurrent streams; retry shortly."
            )
        self.active_streams += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active_streams -= 1
                self.free_now()  # a stream's end: what waits to be freed goes now, not later

        return release
