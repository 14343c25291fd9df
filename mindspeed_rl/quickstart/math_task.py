"""The synthetic math task of the quickstart: small additions answered as ``Answer: N``.

Deterministic from a seed, written in the DAPO-Math-17k parquet schema (REFERENCE.md) so that it
goes through the real preprocessing pipeline and is scored by ``acc_for_dapo`` like the real data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

INSTRUCTION = "Add. End with Answer: N"


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def question(self) -> str:
        return f"{self.a}+{self.b}=? {INSTRUCTION}"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def solution(self) -> str:
        """What a correct response looks like (the warm-start target)."""
        return f"Answer: {self.answer}"


def make_problems(count: int, seed: int = 0, max_operand: int = 30) -> list[Problem]:
    rng = random.Random(seed)
    return [Problem(rng.randrange(max_operand), rng.randrange(max_operand)) for _ in range(count)]


def write_parquet(problems: list[Problem], path: str | Path) -> Path:
    """DAPO-Math-17k rows: data_source, prompt (chat list), ability, reward_model, extra_info."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": "quickstart_addition",
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
    """Texts the toy tokenizer learns its merges from."""
    return [f"{p.question}\n{p.solution}" for p in problems]
