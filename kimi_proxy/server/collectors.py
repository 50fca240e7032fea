"""Metrics that are read, not counted per request: the pool's events as Prometheus series,
what each key has left, and the gateway's link to Redis (collected when scraped)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kimi_proxy.gateway.link import RedisLink
from kimi_proxy.providers.pool import Events as PoolEvents
from kimi_proxy.providers.pool import Pool, Target
from kimi_proxy.web.routes import keys_state

from .observability import Metrics


def report_pool_to(metrics: Metrics, pool: Pool) -> None:
    """The pool's events as Prometheus series per provider, key name and model. Each labelled
    series is looked up once (prometheus_client's `labels()` costs microseconds a call)."""

    @functools.cache
    def series(metric: Counter | Gauge, *labels: str) -> Any:
        return metric.labels(*labels)

    def of(target: Target) -> tuple[str, str, str]:
        return (target.candidate.provider, target.key.key.name, target.candidate.model)

    def waited(target: Target, seconds: float) -> None:
        series(metrics.waits, *of(target)).inc()
        series(metrics.wait_seconds, *of(target)).inc(seconds)

    pool.events = PoolEvents(
        attempt=lambda t: series(metrics.provider_requests, *of(t)).inc(),
        failover=lambda t: series(metrics.failovers, *of(t)).inc(),
        wait=waited,
        rate_limited=lambda t: series(metrics.rate_limited, *of(t)).inc(),
    )
    metrics.registry.register(RemainingCollector(pool))


class GatewayCollector(Collector):
    """The link to Redis, read when scraped: whether it answers, the instances it sees, and
    the requests admitted on this instance's share while it did not."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        link = self.link
        yield GaugeMetricFamily("kimi_redis_up", "Whether Redis answers", value=float(link.up))
        yield GaugeMetricFamily(
            "kimi_gateway_instances", "Instances seen alive", value=float(link.instances)
        )
        yield CounterMetricFamily(
            "kimi_redis_fallback_requests",
            "Requests admitted on this instance's share while Redis was down (fail_open)",
            value=float(link.fallbacks),
        )


class RemainingCollector(Collector):
    """`kimi_provider_remaining`: what each key has left, read from the ledgers when scraped
    (nothing to do per request)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kimi_provider_remaining",
            "What a key has left, as its provider last reported (or as counted)",
            labels=["provider", "key", "kind", "window"],
        )
        for key in keys_state(self.pool, self.pool.clock()):  # what the dashboard shows
            for window in key["windows"]:
                if window["left"] is not None:
                    labels = [key["provider"], key["key"], window["kind"], window["window"]]
                    family.add_metric(labels, window["left"])
        yield family
