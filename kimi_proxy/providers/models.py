"""Which provider model serves which client model id, as configurable rules."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ALIASES = ("claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5")


@dataclass(frozen=True, slots=True)
class ModelRouter:
    """`rules` are (substring, provider model) pairs tried in order; else the big model.

    The defaults send ids containing `haiku` (Claude Code's title and background work) to the
    small model and everything else to the big one.
    """

    big: str
    small: str
    rules: tuple[tuple[str, str], ...] = ()
    aliases: tuple[str, ...] = DEFAULT_ALIASES

    @classmethod
    def fixed(cls, model: str) -> ModelRouter:
        """Every client id to `model` (the pool has already chosen it)."""
        return cls(big=model, small=model)

    @classmethod
    def default_rules(cls, big: str, small: str) -> ModelRouter:
        return cls(big=big, small=small, rules=(("haiku", small),))

    @classmethod
    def from_spec(cls, spec: str, big: str, small: str) -> ModelRouter:
        """`KIMI_MODEL_RULES`: `substring=target` pairs, comma-separated, tried in order;
        a target is `big`, `small` or a provider model id (`opus=moonshotai/kimi-k2-instruct`)."""
        rules = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            needle, sep, target = part.partition("=")
            if not sep or not needle.strip() or not target.strip():
                raise ValueError(f"model rule {part!r} is not substring=target")
            target = target.strip()
            rules.append((needle.strip().lower(), {"big": big, "small": small}.get(target, target)))
        return cls(big=big, small=small, rules=tuple(rules))

    def resolve(self, client_model: str) -> str:
        lowered = client_model.lower()
        for needle, target in self.rules:
            if needle in lowered:
                return target
        return self.big
