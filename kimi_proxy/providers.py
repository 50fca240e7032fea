"""Provider profiles: what each OpenAI-compatible provider accepts, as data.

A profile is chosen from the upstream URL's host. Behaviour that differs between providers is a
field here (a limit, a parameter it rejects, the field that carries reasoning), never an
`if provider == …` ladder in the translators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

GROQ_URL = "https://api.groq.com/openai/v1"
KIMI_K2 = "moonshotai/kimi-k2-instruct-0905"


@dataclass(frozen=True, slots=True)
class ModelLimits:
    output_tokens: int
    context_window: int
    #: False for text-only models: images reach them as a note, never as `image_url` parts.
    accepts_images: bool = True


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    name: str
    models: dict[str, ModelLimits] = field(default_factory=dict)
    default_limits: ModelLimits = ModelLimits(output_tokens=16384, context_window=131072)
    max_tools: int = 128
    max_stop_sequences: int = 4
    supports_top_k: bool = False
    #: Field name under which an assistant message's earlier reasoning is sent back (None: drop).
    reasoning_history_field: str | None = None
    #: Multiply the client's temperature by this (Moonshot's Anthropic endpoint uses 0.6).
    temperature_scale: float = 1.0
    #: Rewrite tool-call ids in the history to Kimi's native `functions.NAME:N` form.
    kimi_tool_ids: bool = False

    def limits(self, model: str) -> ModelLimits:
        return self.models.get(model, self.default_limits)


_KIMI_MODELS = {  # Kimi K2 Instruct reads text only
    KIMI_K2: ModelLimits(output_tokens=16384, context_window=262144, accepts_images=False),
    "moonshotai/kimi-k2-instruct": ModelLimits(16384, 131072, accepts_images=False),
}

GROQ = ProviderProfile(name="groq", models=_KIMI_MODELS, kimi_tool_ids=True)
MOONSHOT = ProviderProfile(
    name="moonshot",
    models={
        "kimi-k2-0905-preview": ModelLimits(32768, 262144, accepts_images=False),
        "kimi-k2-thinking": ModelLimits(32768, 262144, accepts_images=False),
    },
    default_limits=ModelLimits(32768, 131072),
    reasoning_history_field="reasoning_content",
    temperature_scale=0.6,
    kimi_tool_ids=True,
)
OPENROUTER = ProviderProfile(name="openrouter", supports_top_k=True)
GENERIC = ProviderProfile(name="openai-compatible", models=_KIMI_MODELS)

PROFILE_BY_HOST_SUFFIX = {
    "groq.com": GROQ,
    "moonshot.ai": MOONSHOT,
    "moonshot.cn": MOONSHOT,
    "openrouter.ai": OPENROUTER,
}


def profile_for_url(url: str) -> ProviderProfile:
    host = urlsplit(url).hostname or ""
    for suffix, profile in PROFILE_BY_HOST_SUFFIX.items():
        if host == suffix or host.endswith("." + suffix):
            return profile
    return GENERIC


def profile_by_name(name: str) -> ProviderProfile:
    for profile in (GROQ, MOONSHOT, OPENROUTER, GENERIC):
        if profile.name == name:
            return profile
    raise ValueError(f"unknown provider profile {name!r}")
