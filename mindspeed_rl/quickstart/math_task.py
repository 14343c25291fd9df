"""The synthetic math task of the quickstart: a product found by repeated addition, written step
by step.

A problem gives a step and a count; a correct response adds the step that many times, one
numbered line per addition (the line's number, then the total so far), then gives the total::

    prompt:   Add 6, 4 times. End with Answer: N
    response: 1:6
              2:12
              3:18
              4:24
              Answer: 24

Each line follows from the line before it (its number plus one, its total plus the step), so a
tiny model can learn a line; a response is right only when every line is and it stops at the
count. The count (2 to 24) is log-normal with median 5, so reference responses run from 13 to
139 tokens (the run's tokenizer, numbers split into digits) with a long tail
(``LENGTH_DISTRIBUTION`` below, measured by ``reference_lengths``): an iteration waits for its
longest sample, and ``rollout_max_tokens`` with the overlong buffer bind on the longest problems,
as they do on real math data. Answers spread over 4-99 (the most frequent, 12, is 7% of the
problems), so guessing without the lines does not pay: an earlier version whose answer was a
remainder under the step (2-9) taught the policy to skip the lines and guess.

Deterministic from a seed, written in the DAPO-Math-17k parquet schema (REFERENCE.md) so that it
goes through the real preprocessing pipeline and is scored by ``acc_for_dapo`` (the value after
the last ``Answer:``; a response without one scores as wrong) like the real data.

Used by the quickstart, the trainer tests and the benchmarks::

    from mindspeed_rl.quickstart.math_task import make_problems
    problems = make_problems(2400, seed=0)
    problems[0].question, problems[0].solution, problems[0].answer
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

DATA_SOURCE = "quickstart_repeated_add"
DEFAULT_SYSTEM = "You are a helpful assistant."  # the toy tokenizer's chat template adds it
MIN_STEP, MAX_STEP = 2, 9
MIN_COUNT, MAX_COUNT = 2, 24
MAX_PRODUCT = 99  # every total is a number under 100
# log-normal count (lines): median 5, a tail to MAX_COUNT
_COUNT_MEDIAN = 5.0
_COUNT_SIGMA = 0.6

# Tokens of the reference responses (``solution`` + eos) of ``make_problems(2400, seed=0)`` under
# the quickstart's tokenizer (toy BPE, 400 tokens, trained on the first 500 problems, loaded as the
# run loads it beside the model's Qwen2 config: numbers split into digits), measured
# with ``reference_lengths``; the quickstart's rollout_max_tokens / overlong_buffer sit at the tail.
LENGTH_DISTRIBUTION = {"min": 13, "median": 30, "p90": 60, "p99": 126, "max": 139}


@dataclass(frozen=True)
class Problem:
    """Add ``step`` ``count`` times (``count * step`` by repeated addition)."""

    count: int
    step: int

    @property
    def question(self) -> str:
        return f"Add {self.step}, {self.count} times. End with Answer: N"

    @property
    def answer(self) -> str:
        return str(self.count * self.step)

    @property
    def steps(self) -> list[str]:
        """The intermediate lines: ``number: total so far``."""
        return [f"{i}:{i * self.step}" for i in range(1, self.count + 1)]

    @property
    def solution(self) -> str:
        """What a correct response looks like (the warm-start target)."""
        return "\n".join([*self.steps, f"Answer: {self.answer}"])


def _count(rng: random.Random) -> int:
    count = round(math.exp(rng.gauss(math.log(_COUNT_MEDIAN), _COUNT_SIGMA)))
    return min(max(count, MIN_COUNT), MAX_COUNT)


def make_problems(count: int, seed: int = 0) -> list[Problem]:
    """``count`` problems, the same for the same seed on every platform (``random.Random``)."""
    rng = random.Random(seed)
    problems = []
    for _ in range(count):
        lines = _count(rng)
        steps = [k for k in range(MIN_STEP, MAX_STEP + 1) if lines * k <= MAX_PRODUCT]
        problems.append(Problem(lines, rng.choice(steps)))
    return problems


def write_parquet(problems: list[Problem], path: str | Path) -> Path:
    """DAPO-Math-17k rows: data_source, prompt (chat list), ability, reward_model, extra_info."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": p.question}],
            "ability": "MATH",
            "reward_model": {"style": "rule", "ground_truth": p.answer},
            "extra_info": {"index": i},
        }
        for i, p in enumerate(problems)
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def corpus(problems: list[Problem]) -> list[str]:
    """Texts the toy tokenizer learns its merges from: each problem as the chat template renders
    it (the default system turn included), so prompts cost tokens, not bytes."""
    return [
        f"system\n{DEFAULT_SYSTEM}\nuser\n{p.question}\nassistant\n{p.solution}" for p in problems
    ]


def reference_lengths(problems: list[Problem], tokenizer) -> list[int]:
    """Tokens of each reference response, eos included (what a perfect policy generates)."""
    return [len(tokenizer.encode(p.solution, add_special_tokens=False)) + 1 for p in problems]


def length_summary(lengths: list[int]) -> dict[str, int]:
    ordered = sorted(lengths)

    def quantile(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"min": ordered[0], "median": quantile(0.5), "p90": quantile(0.9),
            "p99": quantile(0.99), "max": ordered[-1]}  # fmt: skip
