"""Per-process state shared by the routes. Nothing here is per-conversation: workers are
stateless and scale out behind any load balancer."""

from __future__ import annotations

from dataclasses import dataclass, field

from kimi_proxy.agent.tools import LocalTools
from kimi_proxy.config.settings import Settings
from kimi_proxy.gateway.runtime import GatewayRuntime
from kimi_proxy.gateway.shared_view import SharedView
from kimi_proxy.providers.pool import Pool
from kimi_proxy.web.feed import Feed

from .bodies import BodiesInFlight
from .observability import Metrics
from .streaming import Drain


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

    @property
    def view(self) -> SharedView | None:
        """With Redis: the dashboard's last requests and the sessions' totals of every
        instance (the web routes read it before this instance's own feed)."""
        return self.gateway.view
