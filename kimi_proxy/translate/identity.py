"""Who the model is told it is. Pure.

Claude Code's system prompt tells the model it is Claude. On another provider that makes the
model claim to be Claude, and pick Claude-specific habits. The sentence is rewritten to name the
model and provider really serving the request — the same text every time for the same pair, so
the provider's prompt-cache prefix stays stable — and a prompt without it is left untouched.
"""

from __future__ import annotations

import re

# The sentences Claude Code (2.1.x) opens its system prompt with, per entry point.
_CLAUDE_IDENTITY = re.compile(
    r"You are a Claude agent, built on Anthropic's Claude Agent SDK\."
    r"|You are Claude Code, Anthropic's official CLI for Claude\."
)


def identity_sentence(model: str, provider: str) -> str:
    return (
        f"You are {model}, served by {provider} through kimi-proxy, working as the model behind "
        "Claude Code, Anthropic's CLI. You are not a Claude model."
    )


def rewrite_identity(system: str, model: str, provider: str) -> str:
    """`system` with Claude Code's identity sentence naming `model` at `provider` instead."""
    if "You are" not in system:  # the cheap check first: most requests have it, some don't
        return system
    return _CLAUDE_IDENTITY.sub(identity_sentence(model, provider), system, count=1)
