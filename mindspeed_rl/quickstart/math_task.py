"""The synthetic math task of the quickstart: a chain of signed one-digit terms, summed step by step.

A problem names its terms ``a=4 b=+7 c=-2 ...``; a correct response writes one line per term,
the running total before it, the term and the new total, then the final value::

    b: 4+7=11
    c: 11-2=9
    Answer: 9

Every term keeps the running total in ``[0, MAX_TOTAL]``, so each line is one entry of a small
addition table while the chain, and so the response, grows with the number of terms: 3 to 18
terms give reference responses of about 20 to 150 tokens (toy tokenizer), with a long tail
(``LENGTH_DISTRIBUTION`` below, measured by ``reference_lengths``). An iteration waits for its
longest sample, and ``rollout_max_tokens`` with the overlong buffer bind on the longest problems,
as they do on real math data.

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
import string
from dataclasses import dataclass
from pathlib import Path

INSTRUCTION = "Sum step by step. End with Answer: N"
DATA_SOURCE = "quickstart_chain_sum"
DEFAULT_SYSTEM = "You are a helpful assistant."  # the toy tokenizer's chat template adds it
LABELS = string.ascii_lowercase
MIN_TERMS = 3
MAX_TERMS = 18
MAX_TOTAL = 19
# log-normal number of steps (terms - 1): median 4, a tail to MAX_TERMS - 1
_STEPS_MEDIAN = 4.0
_STEPS_SIGMA = 0.6

# Tokens of the reference responses (``solution`` + eos) of ``make_problems(2400, seed=0)`` under
# the quickstart's tokenizer (toy BPE, 400 tokens, trained on the first 500 problems), measured
# with ``reference_lengths``; the quickstart's rollout_max_tokens / overlong_buffer sit at the tail.
LENGTH_DISTRIBUTION = {"min": 20, "median": 36, "p90": 68, "p99": 132, "max": 140}


@dataclass(frozen=True)
class Problem:
    """``terms[0]`` is the starting value (0-9), the others signed one-digit steps (+-1..9)."""

    terms: tuple[int, ...]

    @property
    def question(self) -> str:
        parts = [f"{LABELS[0]}={self.terms[0]}"]
        parts += [f"{LABELS[i]}={t:+d}" for i, t in enumerate(self.terms[1:], start=1)]
        return f"{' '.join(parts)}. {INSTRUCTION}"

    @property
    def answer(self) -> str:
        return str(sum(self.terms))

    @property
    def steps(self) -> list[str]:
        """The intermediate lines: ``label: total+term=new_total``."""
        lines, total = [], self.terms[0]
        for i, term in enumerate(self.terms[1:], start=1):
            lines.append(f"{LABELS[i]}: {total}{term:+d}={total + term}")
            total += term
        return lines

    @property
    def solution(self) -> str:
        """What a correct response looks like (the warm-start target)."""
        return "\n".join([*self.steps, f"Answer: {self.answer}"])


def _number_of_terms(rng: random.Random) -> int:
    steps = round(math.exp(rng.gauss(math.log(_STEPS_MEDIAN), _STEPS_SIGMA)))
    return min(max(steps + 1, MIN_TERMS), MAX_TERMS)


def _next_term(rng: random.Random, total: int) -> int:
    choices = [t for t in range(-9, 10) if t != 0 and 0 <= total + t <= MAX_TOTAL]
    return rng.choice(choices)


def make_problems(count: int, seed: int = 0) -> list[Problem]:
    """``count`` problems, the same for the same seed on every platform (``random.Random``)."""
    rng = random.Random(seed)
    problems = []
    for _ in range(count):
        terms = [rng.randrange(10)]
        for _ in range(_number_of_terms(rng) - 1):
            terms.append(_next_term(rng, sum(terms)))
        problems.append(Problem(tuple(terms)))
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
