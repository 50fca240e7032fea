"""Token counts against the provider's, per kind of conversation (issue #31): the old estimate
(a token per 4 characters), the calibration's prior, and the calibration after one answer.

No Kimi tokenizer installs offline (its vocabulary is downloaded at run time), so the provider's
count here is `bench/tokenizer.py`'s stand-in; the tests use the same one.

    python -m bench.token_counts
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from bench.tokenizer import count_prompt, quarter_chars
from kimi_proxy.translate.calibration import Calibration, measure

WORDS = (
    *("the", "proxy", "keeps", "a", "session", "on", "one", "provider", "so", "its", "prompt"),
    *("cache", "stays", "warm", "while", "streams", "arrive", "token", "by", "every", "tool"),
    *("call", "reaches", "the", "client", "intact"),
)
HANZI = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "Read",
            "description": "Read a file from the local filesystem.",
            "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}},
        },
    }
]


def english(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def code(rng: random.Random, n: int) -> str:
    return "\n".join(
        f"def step_{i}(items, limit={rng.randint(1, 99)}):\n"
        f"    return [x * {i} for x in items if x % 3 == {rng.randint(0, 2)}][:limit]"
        for i in range(n // 12)
    )


def json_heavy(rng: random.Random, n: int) -> str:
    rows = [
        {"id": i, "name": f"item-{rng.randint(1, 999)}", "tags": ["a", "b"], "price": i * 1.5}
        for i in range(n // 10)
    ]
    return json.dumps(rows)


def chinese(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HANZI) for _ in range(n)) + "。"


KINDS: dict[str, Callable[[random.Random, int], str]] = {
    "english": english,
    "code": code,
    "json": json_heavy,
    "chinese": chinese,
}


def conversation(kind: str, turns: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    make = KINDS[kind]
    messages = [{"role": "system", "content": english(rng, 300)}]
    for _ in range(turns):
        messages.append({"role": "user", "content": make(rng, 200)})
        messages.append({"role": "assistant", "content": make(rng, 120)})
    return {"messages": messages, "tools": TOOLS}


def main() -> None:
    print(
        f"{'conversation':14} {'provider':>9} {'chars/4':>16} {'prior':>16} {'after 1 answer':>16}"
    )
    for kind in sorted(KINDS):
        calibration = Calibration()
        first, following = conversation(kind, turns=5), conversation(kind, turns=6)
        truth = count_prompt(following)
        old = quarter_chars(following)
        prior = calibration.estimate(measure(following))
        calibration.learn(measure(first), count_prompt(first))
        after = calibration.estimate(measure(following))
        cells = [f"{n:7} ({(n - truth) / truth:+6.1%})" for n in (old, prior, after)]
        print(f"{kind:14} {truth:9} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
