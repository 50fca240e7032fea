"""Errors as the Anthropic API shapes them, and the one place provider failures are mapped.

    ProxyError (status, error_type)
    ├── InvalidRequestError      400 invalid_request_error
    ├── AuthenticationError      401 authentication_error
    ├── BillingError             402 billing_error      (credits or plan)
    │   └── TokenLimitError      402 billing_error      (the plan's tokens a minute < one request)
    ├── PermissionDeniedError    403 permission_error
    ├── NotFoundError            404 not_found_error    (the proxy's own routes, a model id)
    ├── ConflictError            409 invalid_request_error (the admin API: a name taken)
    ├── RequestTooLargeError     413 request_too_large
    ├── RateLimitError           429 rate_limit_error   (carries retry_after)
    ├── ApiError                 500 api_error
    │   ├── BadGatewayError      502 api_error          (provider unreachable, broken stream)
    │   └── ModelOutputError     500 api_error          (the model's tool call was invalid)
    ├── GatewayTimeoutError      504 timeout_error
    └── OverloadedError          529 overloaded_error
        ├── DrainingError        503 overloaded_error   (this instance is shutting down)
        └── SharedStoreDownError 503 overloaded_error   (Redis down, policy fail_closed)

Statuses are chosen for what clients do with them: Claude Code retries 429 and 5xx, retries a
400 with fewer betas before showing it, and replaces the message of a 404 or 413 with its own
advice (about the selected model, about images). So a provider's 404 becomes a 400, and its 413
for a request over the key's tokens a minute a 402; a 413 for a body too large stays a 413.

`error_from_provider_response` turns a provider's status and body into one of these;
`error_from_transport` does the same for httpx exceptions. `render_json` / `render_sse`
produce the client-facing body or SSE `error` frame; `send_error` sends a whole response.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import httpx
import orjson
from starlette.types import Send

from kimi_proxy.protocol.waits import retry_after

KEY_ADVICE = (
    "Check the provider keys (MOONSHOT_API_KEY, OPENROUTER_API_KEY, GROQ_API_KEY… or "
    "KIMI_API_KEY, or the keys in your config file, docs/CONFIG.md): set them to valid keys "
    "from your providers and restart kimi-proxy."
)


TOKEN_LIMIT_ADVICE = (
    "Raise the key's tokens-per-minute limit with your provider (Groq: "
    "https://console.groq.com/settings/billing), or give kimi-proxy more keys or providers "
    "(docs/CONFIG.md)."
)
# What Claude Code sends with every request before any conversation: system prompt, environment
# and tool definitions (2.1.328's first request, by the proxy's estimate: tests check it).
CLAUDE_CODE_PROMPT_TOKENS = 12_000

_KEY_PATTERN = re.compile(r"(gsk_|sk-)[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Text with API keys and bearer tokens replaced by `[REDACTED]`."""
    text = _KEY_PATTERN.sub("[REDACTED]", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


class ProxyError(Exception):
    """An error with an HTTP status and an Anthropic error type.

    `final`: retrying soon cannot help, and the person should read the message now. It is sent
    as `x-should-retry: false`, which the Anthropic SDKs and Claude Code honour: Claude Code
    then shows the message at once instead of retrying a 401 for three minutes ("Not logged
    in") or a 429 for as long as `retry-after` says ("retrying in 30s", nothing of ours).
    """

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    final_by_default: ClassVar[bool] = False

    def __init__(
        self, message: str, *, retry_after: float | None = None, final: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.final = self.final_by_default if final is None else final

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = str(int(self.retry_after + 0.999))
        if self.final:
            headers["x-should-retry"] = "false"
        return headers


class InvalidRequestError(ProxyError):
    status, error_type = 400, "invalid_request_error"


class AuthenticationError(ProxyError):
    status, error_type = 401, "authentication_error"
    final_by_default = True  # a wrong or revoked key stays wrong: say so at once


class PermissionDeniedError(ProxyError):
    status, error_type = 403, "permission_error"
    final_by_default = True


class BillingError(ProxyError):
    """The provider wants credits or a better plan (Claude Code shows the message as is)."""

    status, error_type = 402, "billing_error"
    final_by_default = True


class TokenLimitError(BillingError):
    """One request counts more tokens than the provider's per-minute limit for the key allows.

    Waiting cannot help, so it is not a 429 (clients retry those). Not a 413 either: Claude Code
    replaces a 413's message with its own advice about images and a 32 MB limit. It is the
    plan's limit: a billing matter.
    """

    def __init__(self, message: str, *, limit: int, requested: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.requested = requested


class NotFoundError(ProxyError):
    status, error_type = 404, "not_found_error"


class ConflictError(ProxyError):
    status, error_type = 409, "invalid_request_error"


class RequestTooLargeError(ProxyError):
    status, error_type = 413, "request_too_large"


class RateLimitError(ProxyError):
    status, error_type = 429, "rate_limit_error"


class ApiError(ProxyError):
    status, error_type = 500, "api_error"


class BadGatewayError(ApiError):
    status = 502


class ModelOutputError(ApiError):
    """The model's own output failed the provider's validation (Groq's `tool_use_failed`).

    Not the client's fault, so not a 400 (Claude Code turns off features after 400s); another
    attempt usually succeeds, so the upstream client retries it before answering.
    """

    status = 500


class GatewayTimeoutError(ProxyError):
    status, error_type = 504, "timeout_error"


class OverloadedError(ProxyError):
    status, error_type = 529, "overloaded_error"


class SharedStoreDownError(OverloadedError):
    """The gateway's Redis is unreachable and its policy is `fail_closed`: a 503."""

    status = 503


class DrainingError(OverloadedError):
    """This instance is shutting down: a 503, which balancers and clients retry elsewhere."""

    status = 503


ERROR_BY_PROVIDER_STATUS: dict[int, type[ProxyError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    # Not a 404: Claude Code shows its own "issue with the selected model" for any 404, and the
    # fix is in the proxy's settings (KIMI_MODEL, KIMI_UPSTREAM_URL), not the client's model.
    404: InvalidRequestError,
    413: RequestTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
    498: OverloadedError,
    503: OverloadedError,
    504: GatewayTimeoutError,
    529: OverloadedError,
}

MODEL_OUTPUT_FAILURE = b"tool_use_failed"
_CONTEXT_MARKERS = (
    "context_length",
    "context length",
    "maximum context",
    "too many tokens",
    "reduce the length",
    "prompt is too long",
    "context window",
    "model token limit",
)


def provider_error_message(body: bytes | str) -> str:
    """The human message inside a provider's error body (JSON or not), shortened, with
    anything that looks like a key redacted (providers echo keys back)."""
    return redact(_provider_error_message(body))


def _provider_error_message(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("code")
            if msg:
                return str(msg)[:2000]
        elif isinstance(err, str):
            return err[:2000]
    stripped = re.sub(r"<[^>]+>", " ", text)  # HTML error pages
    return " ".join(stripped.split())[:500] or "(empty body)"


def is_context_length_message(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)


def context_too_long(
    message: str, prompt_tokens: int, context_window: int, pattern: str | None = None
) -> InvalidRequestError:
    """Rewrite a provider context error into Anthropic's wording, which Claude Code compacts on:
    the provider's own figures when its wording (`pattern`, from the catalog) gives them."""
    found = re.search(pattern, message) if pattern else None
    if found is not None:
        limit = int(found["limit"])
        requested = int(found["requested"]) + int(found.groupdict().get("extra") or 0)
        return InvalidRequestError(
            f"prompt is too long: {requested} tokens > {limit} maximum (provider said: {message})"
        )
    numbers = [int(n) for n in re.findall(r"\d{3,}", message)]
    tokens = max([n for n in numbers if n != context_window] or [prompt_tokens])
    tokens = max(tokens, context_window + 1)
    return InvalidRequestError(
        f"prompt is too long: {tokens} tokens > {context_window} maximum (provider said: {message})"
    )


# "… tokens per minute (TPM): Limit 10000, Requested 28287, please reduce your message size"
# (Groq, 413) or "… tokens per min (TPM): Limit 30000, Requested 342389." (OpenAI, 429). A rate
# limit that waiting can cure says "Limit …, Used …, Requested …" instead.
_TOKENS_A_MINUTE = re.compile(r"tokens per min|\bTPM\b", re.IGNORECASE)
_LIMIT_REQUESTED = re.compile(r"Limit:? ([\d,]+), Requested:? ([\d,]+)")


def token_limit_error(message: str, *, model: str) -> TokenLimitError | None:
    """The provider's answer when one request exceeds the key's tokens-per-minute limit."""
    found = _LIMIT_REQUESTED.search(message)
    if found is None or not _TOKENS_A_MINUTE.search(message):
        return None
    limit, requested = (int(n.replace(",", "")) for n in found.groups())
    if requested <= limit:
        return None
    return TokenLimitError(
        f"Your provider allows this key {limit:,} tokens a minute for {model}, and this one "
        f"request counts {requested:,} (its prompt plus its answer budget), so it cannot go "
        "through on this plan. Claude Code's instructions and tool definitions alone are about "
        f"{CLAUDE_CODE_PROMPT_TOKENS:,} tokens a request. "
        f"{TOKEN_LIMIT_ADVICE} (Provider said: {message})",
        limit=limit,
        requested=requested,
    )


def error_from_provider_response(
    status: int,
    body: bytes,
    headers: httpx.Headers,
    *,
    model: str,
    prompt_tokens: int = 0,
    context_window: int = 0,
    setting: str = "KIMI_UPSTREAM_URL",
    overflow_pattern: str | None = None,
) -> ProxyError:
    """Map a provider's non-2xx answer to the matching Anthropic error; `setting` names where
    the provider's URL is set (a variable, or the config file's entry)."""
    message = provider_error_message(body)
    overflow = overflow_pattern is not None and re.search(overflow_pattern, message) is not None
    if status in (400, 413, 422) and (
        overflow or (context_window and is_context_length_message(message))
    ):
        return context_too_long(message, prompt_tokens, context_window, overflow_pattern)
    if status in (413, 429) and (too_big := token_limit_error(message, model=model)):
        return too_big
    if status == 400 and MODEL_OUTPUT_FAILURE in body:
        return ModelOutputError(
            f"The model produced an invalid tool call and the provider rejected it ({message}); "
            "try again."
        )
    cls = ERROR_BY_PROVIDER_STATUS.get(status) or (
        ApiError if status >= 500 else InvalidRequestError
    )
    if cls is AuthenticationError:
        message = f"The provider rejected the API key ({message}). {KEY_ADVICE}"
    elif cls is BillingError:
        message = (
            f"The provider refused the request for billing reasons ({message}). Check the "
            "credits and plan of the account behind your API key."
        )
    elif cls is PermissionDeniedError:
        message = f"The provider refused access ({message}). Check that your key may use {model}."
    elif status == 404 and "model" in message.lower():
        message = (
            f"The provider does not know model {model!r} ({message}). "
            "Set KIMI_MODEL / KIMI_SMALL_MODEL to a model your provider serves."
        )
    elif status == 404:
        message = (
            f"The provider has no chat completions endpoint at {setting} (HTTP 404: "
            f"{message}). Set {setting} to the provider's OpenAI-compatible base URL, "
            "the part before /chat/completions (Moonshot: https://api.moonshot.ai/v1)."
        )
    elif cls is RateLimitError:
        message = f"The provider is rate-limiting requests: {message}"
    elif status >= 500:
        message = f"The provider failed with HTTP {status}: {message}"
    else:
        message = f"The provider rejected the request (HTTP {status}): {message}"
    return cls(message, retry_after=retry_after(headers))


def error_from_stream_payload(payload: dict[str, Any], *, model: str) -> ProxyError:
    """An `error` object a provider sent inside a 200 stream."""
    err = payload.get("error")
    message = provider_error_message(orjson.dumps(payload)) if err is not None else str(payload)
    code = err.get("status_code") or err.get("code") if isinstance(err, dict) else None
    if code == MODEL_OUTPUT_FAILURE.decode():
        return ModelOutputError(f"The model produced an invalid tool call mid-stream: {message}")
    if isinstance(code, int) and code in ERROR_BY_PROVIDER_STATUS:
        return ERROR_BY_PROVIDER_STATUS[code](f"The provider failed mid-stream: {message}")
    if is_context_length_message(message):
        return InvalidRequestError(f"The provider failed mid-stream: {message}")
    return ApiError(f"The provider failed mid-stream ({model}): {message}")


def transport_failure_kind(exc: httpx.HTTPError) -> str:
    """`connect`, `connect_timeout`, `read_timeout` or `broken`, from the httpx exception."""
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "read_timeout"
    return "broken"


def error_from_transport(
    exc: httpx.HTTPError, *, upstream: str, setting: str = "KIMI_UPSTREAM_URL"
) -> ProxyError:
    """Map an httpx exception (no HTTP answer from the provider) to an Anthropic error;
    `setting` names where the provider's URL is set. Credentials in the URL are never shown."""
    upstream = str(httpx.URL(upstream).copy_with(username=None, password=None))
    kind = transport_failure_kind(exc)
    if kind in ("connect_timeout", "read_timeout"):
        phase = "connecting to" if kind == "connect_timeout" else "waiting for"
        return GatewayTimeoutError(f"Timed out {phase} the provider at {upstream}.")
    if kind == "connect":
        return BadGatewayError(
            f"Cannot connect to the provider at {upstream}: {exc or type(exc).__name__}. "
            f"Check {setting} and your network."
        )
    return BadGatewayError(
        f"The connection to the provider at {upstream} failed: {exc or type(exc).__name__}."
    )


def internal_error(exc: BaseException) -> ApiError:
    """What the client reads about a failure nobody foresaw (the traceback is in the log)."""
    return ApiError(f"Internal proxy error ({type(exc).__name__}); see the proxy log.")


def render_json(error: ProxyError) -> bytes:
    return orjson.dumps(error.body())


async def send_error(send: Send, error: ProxyError) -> None:
    """`error` as a whole ASGI response, for middleware that answers below any framework."""
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": render_json(error)})


def render_sse(error: ProxyError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error.body()) + b"\n\n"
