"""One client request's way through the pool: pick a key, reserve, send, learn from a failure,
pick again — until a provider answers, the attempts run out, or the plan refuses.

`Call.open()` asks `plan.choose` for a key, reserves the request's estimate on it (`budget`),
sends, and on a failure decides what it says about the key or the model — cool the key down for
the provider's reset, disable it (401/403), retire the model (gone) — then asks again. Nothing
has reached the client yet, so the client sees one answer whatever happened. `Call.reopen()`
does the same after a stream failed before its first content block. Every reservation ends
exactly once: acknowledged by the provider's headers, settled at the end, or released on
failure.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import orjson

from kimi_proxy.errors import (
    ProxyError,
)
from kimi_proxy.translate.calibration import Prompt, bound
from kimi_proxy.translate.encoding import payload_json
from kimi_proxy.translate.request import UpstreamRequest
from kimi_proxy.upstream.client import MIN_ANSWER_TOKENS, CallContext, UpstreamFailure

from .budget import Admission, Reservation, WaitUntil
from .lessons import lesson
from .plan import Go, Option, Refuse, Wait, choose, refusal
from .pool import Build, KeyState, Pool, Rider, Target
from .spec import CandidateSpec

log = logging.getLogger("kimi_proxy.pool")
flow_log = logging.getLogger("kimi_proxy.flow")

AFFINITY_SESSIONS = 10_000  # sessions remembered (least recently used forgotten first)
FIT_MARGIN = 0.99  # fit an answer budget to 99% of a key's tokens a minute
UNBOUNDED = 1 << 60


class MustWait(Exception):
    """The best choice is a wait longer than a silent pause: the route starts its stream
    (so the client sees pings) and opens from inside it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"wait {seconds:.1f} s")
        self.seconds = seconds


class AttemptSpan(Protocol):
    def failed(self, error: ProxyError | None) -> None: ...


class AttemptTracer(Protocol):
    """Traces each attempt (the server's OpenTelemetry spans, `server/tracing.py`)."""

    def attempt(self, target: Target, max_tokens: int, body: bytes) -> AttemptSpan: ...


@dataclass(slots=True)
class Opened:
    call: Call
    target: Target
    request: UpstreamRequest
    response: httpx.Response


@dataclass(slots=True)
class Call:
    """One client request through the pool."""

    pool: Pool
    candidates: tuple[CandidateSpec, ...]
    build: Build
    prompt_tokens: int
    answer_tokens: int
    session: str | None
    max_wait: float
    attempts: int = 0
    limit: int = 0  # attempts allowed: 1 + max_retries + one per other target
    retries: int = 0  # attempts on the target that just failed
    failovers: int = 0  # attempts on another target than the one that just failed
    previous: tuple[str, str, str] | None = None
    waited: float = 0.0
    first_failure: float | None = None
    excluded: set[tuple[str, str, str]] = field(default_factory=set)
    backoff: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)
    built: dict[str, UpstreamRequest] = field(default_factory=dict)
    encoded: dict[str, bytes] = field(default_factory=dict)
    keep_payload: bool = False
    #: Its user's grant (gateway/limits.py): ended with the tokens used and the cost.
    on_end: Callable[[int | None, float | None], None] | None = None
    rider: Rider | None = None  # its user's claim, to take with the first key's
    reservation: Reservation | None = None
    shared: str | None = None  # its id on the gateway's shared budgets, while it holds them
    target: Target | None = None
    last_error: ProxyError | None = None
    prompt: Prompt | None = None  # the prompt's counts, which the provider's report calibrates
    tracer: AttemptTracer | None = None  # with OpenTelemetry on: a span per attempt
    span: AttemptSpan | None = None  # the open attempt's

    @classmethod
    def start(
        cls,
        pool: Pool,
        candidates: tuple[CandidateSpec, ...],
        build: Build,
        *,
        prompt_tokens: int,
        answer_tokens: int,
        session: str | None,
    ) -> Call:
        """A call through `pool`, waiting for a key at most as long as its routes allow."""
        return cls(
            pool,
            candidates,
            build,
            prompt_tokens=prompt_tokens,
            answer_tokens=answer_tokens,
            session=session,
            max_wait=pool.spec.routes.max_wait_s,
        )

    # -- choosing ---------------------------------------------------------------------------

    def _targets(self) -> list[Target]:
        pool = self.pool
        now = pool.clock()
        targets: list[Target] = []
        for candidate in self.candidates:
            if candidate.label in pool.retired:
                continue
            keys = [k for k in pool.keys.get(candidate.provider, ()) if k.disabled is None]
            if len(keys) > 1:
                keys.sort(key=lambda k: -_left(k, now))  # the one with most left first
            targets += [Target(candidate, k) for k in keys]
        sticky = pool.affinity.get(self.session) if self.session and len(targets) > 1 else None
        if sticky is not None:
            targets.sort(key=lambda t: _ident(t) != sticky)
        if not self.excluded:
            return targets
        return [t for t in targets if _ident(t) not in self.excluded]

    def need(self, target: Target) -> int:
        """Tokens to reserve on `target`: input estimate + answer budget, the answer budget
        fitted to the key's known tokens a minute when the prompt leaves room."""
        cap = target.candidate.limits.output_tokens
        need = self.prompt_tokens + min(self.answer_tokens, cap)
        tpm = target.key.ledger.windows.get(("tokens", "minute"))
        if tpm is not None and tpm.limit is not None and need > tpm.limit:
            fitted = int(tpm.limit * FIT_MARGIN)
            if fitted - self.prompt_tokens >= MIN_ANSWER_TOKENS:
                return fitted
        return need

    def _admission(self, target: Target, now: float) -> Admission:
        admission = target.key.ledger.admission(self.need(target), now)
        until, why = self.backoff.get(_ident(target), (None, ""))
        if until is not None and until > now and not isinstance(admission, WaitUntil):
            return WaitUntil(until, why)
        if until is not None and isinstance(admission, WaitUntil) and until > admission.at:
            return WaitUntil(until, admission.reason)
        return admission

    def _choose(self) -> tuple[Target, float] | Refuse:
        now = self.pool.clock()
        targets = self._targets()
        if not self.limit:  # attempts allowed: 1 + max_retries + one per other target
            self.limit = 1 + self.pool.max_retries + max(0, len(targets) - 1)
        options = [Option(i, t.label, self._admission(t, now)) for i, t in enumerate(targets)]
        choice = choose(options, now, max(0.0, self.max_wait - self.waited))
        match choice:
            case Go(ref):
                return targets[ref], 0.0
            case Wait(ref, until):
                return targets[ref], until - now
            case Refuse():
                return choice

    # -- opening ----------------------------------------------------------------------------

    async def open(self, *, may_stream_wait: bool = False) -> Opened:
        """A provider's 2xx answer for this request, trying keys and candidates in turn.

        Waits shorter than a ping interval happen here; a longer one raises `MustWait` unless
        `may_stream_wait` (the client already has its stream and sees pings meanwhile).
        """
        pool = self.pool
        while True:
            picked = self._choose()
            if isinstance(picked, Refuse):
                raise self._refusal(picked)
            target, wait = picked
            if wait > 0:
                if wait > pool.silent_wait and not may_stream_wait:
                    raise MustWait(wait)
                pool.events.wait(target, wait)
                await asyncio.sleep(wait)
                self.waited += wait
                continue
            if self.last_error is not None and (
                self.attempts >= self.limit or self._out_of_retry_time()
            ):
                raise self.last_error
            if self.previous is not None:
                if _ident(target) == self.previous:
                    self.retries += 1
                else:
                    self.failovers += 1
            opened = await self._attempt(target)
            if opened is not None:
                return opened

    async def _attempt(self, target: Target) -> Opened | None:
        pool = self.pool
        request = self.built.get(target.candidate.label)
        if request is None:
            request = self.built[target.candidate.label] = self.build(target.candidate)
        body = self._body(target.candidate.label, request)
        need = self.need(target)
        if need - self.prompt_tokens < request.max_tokens:  # fitted to the key's limit
            payload = orjson.loads(body)
            payload["max_tokens"] = need - self.prompt_tokens
            body = orjson.dumps(payload)
        shared = None
        if pool.shared is not None:  # the gateway's instances together: one Redis round trip
            shared = secrets.token_hex(8)
            wait = await pool.shared.take(target.key, need, shared, self.rider)
            self._hold_rider()
            if wait is not None:
                if math.isinf(wait):
                    self.excluded.add(_ident(target))
                else:
                    reason = "its limits are held by the gateway's other instances"
                    self.backoff[_ident(target)] = (pool.clock() + wait, reason)
                return None
        reservation = target.key.ledger.reserve(need, pool.clock())
        if flow_log.isEnabledFor(logging.DEBUG):
            flow_log.debug("upstream request to %s: %s", target.label, body.decode())
        self.attempts += 1
        pool.events.attempt(target)
        context = CallContext(
            model=target.candidate.model,
            prompt_tokens=self.prompt_tokens,
            context_window=target.candidate.limits.context_window,
            overflow_pattern=pool.spec.providers[
                target.candidate.provider
            ].profile.overflow_pattern,
        )
        span = self.tracer.attempt(target, request.max_tokens, body) if self.tracer else None
        try:
            response = await target.key.client.open(body, context)
        except UpstreamFailure as failure:
            target.key.ledger.release(reservation)
            self._give_back(shared)
            if span is not None:
                span.failed(failure.error)
            self._failed(target, failure)
            return None
        except BaseException:
            target.key.ledger.release(reservation)
            self._give_back(shared)
            if span is not None:
                span.failed(None)
            raise
        self.span = span
        pool.observe(target.key, reservation, response.headers)
        self.reservation, self.target, self.shared = reservation, target, shared
        if self.session:
            pool.affinity[self.session] = _ident(target)
            pool.affinity.move_to_end(self.session)
            if len(pool.affinity) > AFFINITY_SESSIONS:
                pool.affinity.popitem(last=False)
        return Opened(self, target, request, response)

    def _give_back(self, shared: str | None) -> None:
        if shared is not None and self.pool.shared is not None:
            self.pool.shared.done(shared, None, give_back=True)

    def _body(self, label: str, request: UpstreamRequest) -> bytes:
        """The request as sent, encoded once per candidate. Unless the payload is still needed
        (agent mode edits it), it is let go: while the provider thinks, a stream holds 50 KB of
        bytes, not the payload's objects."""
        body = self.encoded.get(label)
        if body is None:
            body = self.encoded[label] = payload_json(request.payload)
            if not self.keep_payload:
                self.pool.let_go(request.payload)
                request.payload = {}
        return body

    def _out_of_retry_time(self) -> bool:
        if self.first_failure is None:
            return False
        spent = self.pool.clock() - self.first_failure - self.waited
        return spent > self.pool.retry_budget

    def _failed(self, target: Target, failure: UpstreamFailure) -> None:
        """Learn from a failed attempt (`lessons.lesson`), or raise when the failure is the
        client's to see."""
        pool = self.pool
        if self.first_failure is None:
            self.first_failure = pool.clock()
        self.last_error = failure.error
        ident = _ident(target)
        now = pool.clock()
        key = target.key
        if failure.status is not None:  # the provider answered: learn what it reported
            pool.observe(key, Reservation(), failure.headers)
        taught = lesson(failure, key.ledger, now, self.attempts)
        if taught is None:
            raise failure.error
        if taught.disable is not None:
            pool.disable(key, taught.disable)
        if taught.retire is not None:
            pool.retire(target.candidate, taught.retire)
        if taught.cap_tokens is not None:
            key.ledger.cap_tokens_per_minute(taught.cap_tokens, now)
        if taught.exclude:
            self.excluded.add(ident)
        if taught.cool_until is not None:
            key.ledger.cool_down(taught.cool_until, "rate-limited by the provider (429)")
            pool.events.rate_limited(target)
        if taught.backoff_until is not None:
            self.backoff[ident] = (taught.backoff_until, "failed just now; backing off")
        self.previous = ident
        pool.events.failover(target)
        log.info("%s failed (%s)", target.label, taught.reason)

    def _refusal(self, refuse: Refuse) -> ProxyError:
        retired = self.pool.retired
        return refusal(
            refuse,
            keys_left=self._live_keys(),
            disabled=self.pool.disabled_summary(),
            last_error=self.last_error,
            gone=[(c.label, retired.get(c.label)) for c in self.candidates],
        )

    def _live_keys(self) -> bool:
        return any(
            k.disabled is None for c in self.candidates for k in self.pool.keys.get(c.provider, ())
        )

    async def take_rider_alone(self) -> None:
        """Take the user's claim now, on its own (a long wait for a key is ahead)."""
        if self.rider is not None:
            await self.rider.take_alone()
            self._hold_rider()

    def _hold_rider(self) -> None:
        """Once the user's claim is taken, it is held until the request ends (`finish`)."""
        if self.rider is not None and self.rider.grant is not None:
            self.on_end, self.rider = self.rider.end, None

    def answered(self) -> None:
        """The answer has reached the client: no failover any more, so let the request go."""
        self.build = _no_more_translations
        self.built.clear()
        self.encoded.clear()

    def sent(self, opened: Opened) -> None:
        """The provider has the request: free it (a failover translates again)."""
        label = opened.target.candidate.label
        self.built.pop(label, None)
        self.encoded.pop(label, None)
        opened.request.payload = {}

    async def reopen(self, error: ProxyError) -> Opened:
        """The open stream failed before its first content block: settle it, try another."""
        assert self.target is not None
        self.settle(None)
        if self.span is not None:
            self.span.failed(error)
        self.last_error = error
        self.previous = _ident(self.target)
        self.excluded.add(self.previous)
        self.pool.events.failover(self.target)
        log.info("%s broke before the first token: failing over", self.target.label)
        return await self.open(may_stream_wait=True)

    def counted(self, usage: dict[str, int]) -> None:
        """The provider reported how many tokens it counted in the prompt: the model's
        calibration learns from it, unless the estimate was already within 0.5%. A report far
        from any plausible count (a provider that reports no real usage) is ignored."""
        if self.prompt is None or self.target is None:
            return
        reported = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
        estimated = max(1, self.prompt_tokens)
        if 0.25 <= reported / estimated <= 4 and abs(reported - estimated) > estimated / 200:
            self.pool.calibration(self.target.candidate.model).learn(self.prompt, reported)

    def finish(self, used_tokens: int | None, cost_usd: float | None = None) -> None:
        """The client's request is over (answered, failed or abandoned): settle, and end what
        else it held (its user's budget, and its dollars), once."""
        self.settle(used_tokens)
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end(used_tokens, cost_usd)

    def worst_cost(self, prompt_tokens: int | None = None) -> float:
        """The most this request can cost: its prompt (`prompt_tokens`, else the estimate) and
        whole answer budget, at the prices of its dearest candidate (a user's dollars budget is
        admitted against it)."""
        prompt = self.prompt_tokens if prompt_tokens is None else prompt_tokens
        return max(
            (c.limits.prices.cost(prompt, 0, self.answer_tokens) for c in self.candidates),
            default=0.0,
        )

    def prompt_bound(self) -> int:
        """The most tokens the prompt can be, whatever its text (`calibration.bound`)."""
        return (
            self.prompt_tokens
            if self.prompt is None
            else max(self.prompt_tokens, bound(self.prompt))
        )

    def settle(self, used_tokens: int | None) -> None:
        """The request is over: counted windows spend what it used (its reservation when the
        usage is unknown: a disconnect, a broken stream)."""
        if self.target is not None and self.reservation is not None:
            used = self.reservation.tokens if used_tokens is None else used_tokens
            self.target.key.ledger.settle(self.reservation, used)
            self.reservation = None
            if self.shared is not None and self.pool.shared is not None:
                self.pool.shared.done(self.shared, used_tokens)
            self.shared = None


def _left(key: KeyState, now: float) -> int:
    """Tokens a key has left now; a key with no known bound counts as having the most."""
    left = key.ledger.available_tokens(now)
    return UNBOUNDED if left is None else left


def _no_more_translations(candidate: CandidateSpec) -> UpstreamRequest:
    raise AssertionError(f"translating for {candidate.label} after the answer began")


def _ident(target: Target) -> tuple[str, str, str]:
    return (target.candidate.provider, target.key.key.name, target.candidate.model)
