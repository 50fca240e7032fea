"""A Claude Code session on free-tier keys: `python -m bench.pool_session`.

The real Claude Code CLI (the pinned one) runs a 20-turn task — nineteen Bash steps, then an
answer — through the real proxy to a scripted provider that keeps Groq's free-tier limit per
key: 10,000 tokens a minute, counting each request's prompt and whole `max_tokens` when it
arrives, reporting its figures in Groq's headers and answering 429 when a request does not fit.
Once with three keys, once with one. Time runs ten times faster than on the wall (a "minute"
is 6 s, `max_wait_s` 2 s for 20 s, a model's turn 1 s for 10 s), so a run takes seconds, not
minutes; the answer budget is
`KIMI_MAX_OUTPUT_TOKENS=2048`, as a free-tier user sets it, and Claude Code gets a short system
prompt and only Bash (`--system-prompt`, `--tools Bash`) so one request fits a key at all.

Prints, per run: turns completed, errors Claude Code showed (its `api_retry` lines and an
error result), requests the provider refused, requests over a key's limit (must be 0),
seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kimi_proxy.cli.claude_code import pinned_claude_code
from kimi_proxy.cli.launcher import free_port
from kimi_proxy.config.settings import load_settings
from kimi_proxy.server.app import create_app
from kimi_proxy.translate.calibration import Calibration, measure

TPM = 10_000
MINUTE = 6.0  # the scaled minute
MAX_WAIT = 2.0  # 20 s, scaled
STEPS = 19
MODEL = "kimi-free"
PACE = 1.0  # a model's turn: 10 s on the wall (thinking, then a tool call), scaled


@dataclass
class FreeTierProvider:
    """Per key: TPM tokens a MINUTE, the prompt and whole max_tokens counted on arrival."""

    windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    refused: int = 0
    over_limit: int = 0
    served: int = 0
    needs: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def completions(self, request: Request) -> Response:
        body = json.loads(await request.body())
        key = request.headers.get("authorization", "")
        need = Calibration().estimate(measure(body)) + int(body.get("max_tokens") or 0)
        self.needs.append(need)
        with self.lock:
            now = time.monotonic()
            start, used = self.windows.get(key, (now, 0))
            if now - start >= MINUTE:
                start, used = now, 0
            reset = start + MINUTE - now
            fits = used + need <= TPM
            if fits:
                used += need
                self.windows[key] = (start, used)
                self.served += 1
            else:
                self.refused += 1
                self.over_limit += 1  # the proxy sent what the reported budget could not hold
        headers = {
            "x-ratelimit-limit-tokens": str(TPM),
            "x-ratelimit-remaining-tokens": str(TPM - used),
            "x-ratelimit-reset-tokens": f"{reset:.2f}s",
        }
        if not fits:
            headers["retry-after"] = str(max(1, round(reset)))
            error = {"error": {"message": "Rate limit reached: tokens per minute (TPM)"}}
            return JSONResponse(error, status_code=429, headers=headers)
        done = sum(1 for m in body["messages"] if m["role"] == "tool")
        return StreamingResponse(_answer(done), media_type="text/event-stream", headers=headers)

    async def models(self, request: Request) -> Response:
        return JSONResponse({"data": [{"id": MODEL}]})


async def _answer(done: int) -> AsyncIterator[bytes]:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    await asyncio.sleep(PACE)
    if done < STEPS:
        call = {
            "index": 0,
            "id": f"functions.Bash:{done}",
            "type": "function",
            "function": {
                "name": "Bash",
                "arguments": json.dumps({"command": f"echo step {done + 1}"}),
            },
        }
        yield event({"tool_calls": [call]})
        yield event({}, "tool_calls")
    else:
        yield event({"content": "Twenty turns done."})
        yield event({}, "stop")
    usage = {"prompt_tokens": 2000, "completion_tokens": 30, "total_tokens": 2030}
    yield b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run(keys: int, folder: Path) -> dict[str, Any]:
    provider = FreeTierProvider()
    upstream = Starlette(
        routes=[
            Route("/v1/chat/completions", provider.completions, methods=["POST"]),
            Route("/v1/models", provider.models, methods=["GET"]),
        ]
    )
    with _serve(upstream) as upstream_url:
        config = folder / f"keys{keys}.toml"
        names = ", ".join(f'"free-key-{i}"' for i in range(keys))
        config.write_text(
            f'[[provider]]\nname = "groq"\nbase_url = "{upstream_url}/v1"\nkeys = [{names}]\n'
            f'[family.kimi]\ncandidates = ["groq:{MODEL}"]\n[route]\nmax_wait_s = {MAX_WAIT}\n'
        )
        settings = load_settings(config=config, max_output_tokens=2048, max_retries=1)
        with _serve(create_app(settings)) as proxy_url:
            home = folder / f"home{keys}"
            work = folder / f"work{keys}"
            home.mkdir()
            work.mkdir()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "ANTHROPIC_BASE_URL": proxy_url,
                "ANTHROPIC_API_KEY": "bench",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
            }
            command = [
                str(pinned_claude_code(quiet=True)),
                "-p",
                "Run the twenty steps.",
                "--output-format",
                "stream-json",
                "--verbose",
                "--system-prompt",
                "You are a careful coding agent. Use Bash when asked.",
                "--tools",
                "Bash",
                "--allowedTools",
                "Bash",
            ]
            started = time.monotonic()
            done = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, timeout=900
            )
            seconds = time.monotonic() - started
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    retries = [x for x in lines if x.get("type") == "system" and x.get("subtype") == "api_retry"]
    result: dict[str, Any] = next((x for x in lines if x.get("type") == "result"), {})
    return {
        "keys": keys,
        "turns": result.get("num_turns"),
        "errors shown": len(retries) + bool(result.get("is_error")),
        "statuses": sorted(
            {str(r.get("error_status")) + " " + str(r.get("error")) for r in retries}
        ),
        "result": str(result.get("result", ""))[:80],
        "refused (429)": provider.refused,
        "over a key's limit": provider.over_limit,
        "requests served": provider.served,
        "seconds": round(seconds, 1),
        "tokens a request (prompt + max_tokens)": sorted(provider.needs)[len(provider.needs) // 2],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for keys in (3, 1):
            print(run(keys, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
