"""Provider profiles: what each OpenAI-compatible provider and model accepts, as typed values.

The values come from `catalog.toml` (see `catalog.py`). Behaviour that differs between
providers is a field here (a limit, a parameter it rejects, the field that carries reasoning),
never an `if provider == …` ladder in the translators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """USD for a request; `input_tokens` excludes the cached ones (Anthropic's usage)."""
        return (
            input_tokens * self.input
            + cached_tokens * self.cached_input
            + output_tokens * self.output
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class ModelLimits:
    output_tokens: int
    context_window: int
    #: False for text-only models: images reach them as a note, never as `image_url` parts.
    accepts_images: bool = True
    reasoning: bool = False
    #: The only temperature the model accepts (Kimi K2.6: 1.0); None when any is fine.
    fixed_temperature: float | None = None
    shutdown: date | None = None
    replacement: str | None = None
    family: str | None = None
    prices: Prices = Prices()
    #: The provider's own switch for thinking (Moonshot: `thinking`): set to
    #: `{"type": "disabled"}` when the client disables it; None: thinking cannot be turned off.
    thinking_param: str | None = None
    #: While thinking, every assistant tool-call message must carry the reasoning field.
    reasoning_required_on_tool_calls: bool = False
    #: False: a `tool_choice` other than auto/none is refused while thinking (Kimi K2.6).
    forced_tool_choice_with_thinking: bool = True
    #: Takes OpenAI's `response_format: {"type": "json_schema"}` (structured output).
    json_schema: bool = False


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
    #: The provider's wording of a context overflow: a regex with the groups `limit` and
    #: `requested` (and optionally `extra`, added to `requested`), mapped to Anthropic's words.
    overflow_pattern: str | None = None

    def limits(self, model: str) -> ModelLimits:
        return self.models.get(model, self.default_limits)
