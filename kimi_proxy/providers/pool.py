"""The provider pool at run time: each key with its ledger and client, what failures taught
(disabled keys, retired models), and which key each session last used.

A client request goes through the pool as a `Call` (`call.py`): it picks, waits and fails over.
The pool is the state those calls share within one process.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from kimi_proxy.translate.calibration import Calibration
from kimi_proxy.translate.request import UpstreamRequest
from kimi_proxy.upstream.client import UpstreamClient

from .budget import KeyLedger, Reservation
from .dialects import read_limits
from .spec import CandidateSpec, KeySpec, PoolSpec, ProviderSpec

log = logging.getLogger("kimi_proxy.pool")

Build = Callable[[CandidateSpec], UpstreamRequest]


@dataclass(slots=True)
class KeyState:
    provider: ProviderSpec
    key: KeySpec
    client: UpstreamClient
    ledger: KeyLedger
    disabled: str | None = None
    recheck_at: float | None = None  # when a disabled key is asked again (recheck.py)
    recheck_every: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.provider.name} key {self.key.name}"


@dataclass(frozen=True, slots=True)
class Target:
    candidate: CandidateSpec
    key: KeyState

    @property
    def label(self) -> str:
        return f"{self.key.label} ({self.candidate.model})"


@dataclass(slots=True)
class Events:
    """What the pool reports as it works (metrics, the dashboard); no-ops by default."""

    attempt: Callable[[Target], None] = lambda target: None
    #: A request left this target for another try (a failure before its first token).
    failover: Callable[[Target], None] = lambda target: None
    wait: Callable[[Target, float], None] = lambda target, seconds: None
    rate_limited: Callable[[Target], None] = lambda target: None


class Rider(Protocol):
    """Another claim the first attempt takes with its key's (`gateway.limits.UserAsk`)."""

    @property
    def grant(self) -> object | None: ...

    async def take_alone(self) -> None: ...

    def end(self, used_tokens: int | None, cost_usd: float | None = None) -> None: ...


class SharedBudgets(Protocol):
    """The keys' budgets as every instance of a gateway spends them (`gateway/key_budgets.py`).
    `take` answers None when the request is taken on them, else the seconds until it may be
    (`math.inf`: never); `done` settles it (or gives it back) once. A `rider` (the user's own
    claim) is taken in the same step, or the step raises the error that refuses it."""

    async def take(
        self, key: KeyState, need_tokens: int, ident: str, rider: Rider | None = None
    ) -> float | None: ...

    def done(self, ident: str, used_tokens: int | None, *, give_back: bool = False) -> None: ...


class Pool:
    def __init__(
        self,
        spec: PoolSpec,
        new_client: Callable[[ProviderSpec, KeySpec], UpstreamClient],
        *,
        max_retries: int,
        retry_budget: float,
        ping_interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.wall_clock = wall_clock
        self.max_retries = max_retries
        self.retry_budget = retry_budget  # seconds of retrying after a failure, waits aside
        self.silent_wait = ping_interval  # shorter waits happen before the answer starts
        self.events = Events()
        now = clock()
        self.keys: dict[str, list[KeyState]] = {
            name: [
                KeyState(p, k, new_client(p, k), KeyLedger.with_limits(p.limits, now))
                for k in p.keys
            ]
            for name, p in spec.providers.items()
        }
        self.shared: SharedBudgets | None = None  # set by a gateway with Redis
        self.retired: dict[str, str] = {}  # candidate label → why
        self.affinity: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        #: Each model's token count, calibrated by what its providers report (calibration.py).
        self.calibrations: dict[str, Calibration] = {}
        #: Lets go of what a call no longer needs (the server frees it while the provider
        #: thinks: `ProxyState.free_later`); by default, at once.
        self.let_go: Callable[[object], None] = lambda thing: None

    def calibration(self, model: str) -> Calibration:
        found = self.calibrations.get(model)
        if found is None:
            found = self.calibrations[model] = Calibration()
        return found

    def forget(self) -> None:
        """Start over as a restart would: keys enabled, models back, budgets and sessions
        forgotten."""
        now = self.clock()
        for key in self.all_keys():
            key.disabled = None
            key.ledger = KeyLedger.with_limits(key.provider.limits, now)
        self.retired.clear()
        self.affinity.clear()

    def all_keys(self) -> Iterator[KeyState]:
        for keys in self.keys.values():
            yield from keys

    def retired_summary(self) -> str:
        """Each retired candidate and why, for a message ("" when none is)."""
        return "; ".join(f"{label}: {why}" for label, why in self.retired.items())

    def disabled_summary(self) -> str:
        """Each disabled key and why, for a message ("" when none is)."""
        return "; ".join(f"{k.label}: {k.disabled}" for k in self.all_keys() if k.disabled)

    def candidates(self, route: str, client_model: str) -> tuple[CandidateSpec, ...]:
        return self.spec.candidates(route, client_model)

    def live(self, candidates: Iterable[CandidateSpec]) -> list[CandidateSpec]:
        """The candidates not retired, in their order."""
        return [c for c in candidates if c.label not in self.retired]

    def first_live(self, candidates: Iterable[CandidateSpec]) -> CandidateSpec | None:
        return next((c for c in candidates if c.label not in self.retired), None)

    def first_candidate(self, route: str, client_model: str) -> CandidateSpec | None:
        return self.first_live(self.candidates(route, client_model))

    # -- what failures say about keys and models ------------------------------------------

    def disable(self, key: KeyState, why: str) -> None:
        if key.disabled is None:
            key.disabled = why
            key.recheck_every = self.spec.routes.key_recheck_s
            key.recheck_at = self.clock() + key.recheck_every
            log.error(
                "%s disabled: %s (checked again in %.0f s)", key.label, why, key.recheck_every
            )

    def enable(self, key: KeyState) -> None:
        """The provider accepts a disabled key again: it serves again at once."""
        if key.disabled is not None:
            key.disabled = key.recheck_at = None
            log.warning("%s serves again: the provider accepts it", key.label)

    def retire(self, candidate: CandidateSpec, why: str) -> None:
        if candidate.label not in self.retired:
            self.retired[candidate.label] = why
            log.error("%s retired until restart: %s", candidate.label, why)

    def observe(self, key: KeyState, reservation: Reservation, headers: Mapping[str, str]) -> None:
        """What the provider's answer reports of the key's limits (any answer, errors too)."""
        plain = dict(headers.items())  # httpx.Headers looks each name up by a scan
        reported = read_limits(key.provider.dialect, plain, self.clock(), self.wall_clock())
        key.ledger.acknowledge(reservation, reported)
