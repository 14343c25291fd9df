"""Shared fixtures: a locally built tokenizer and small files in the DAPO-Math-17k schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer

# Prompt contents chosen to stress tokenization: unicode, CJK, emoji, LaTeX, newlines, tabs,
# surrounding spaces and a literal special token inside user text.
PROMPTS = [
    "Solve for $x$: $2x + 3 = 11$. Remember to put your answer on its own line after 'Answer:'.",
    "Calcule la dérivée de $f(x) = x^2 \\cdot e^{x}$.\nAnswer: $Answer",
    "一个三角形的三边长分别为 3、4、5，求面积。",
    "  leading and trailing spaces  ",
    "emoji 😀 and tabs\tand\r\nwindows newlines",
    "What is <|im_end|> doing in a prompt?",
    "Let $\\frac{a}{b} = \\sqrt{2}$; find $a^2 / b^2$.",
]
GROUND_TRUTHS = ["4", "2x e^x + x^2 e^x", "6", " 7 ", "\\frac{1}{8}", "42", "2"]


def dapo_row(i: int) -> dict[str, Any]:
    """Row i of a synthetic DAPO-Math-17k file (the real column set and nesting)."""
    return {
        "data_source": "math_dapo",
        "prompt": [{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} (#{i})"}],
        "ability": "MATH",
        "reward_model": {
            "style": "rule",
            "ground_truth": f"{GROUND_TRUTHS[i % len(GROUND_TRUTHS)]}{i}",
        },
        "extra_info": {"index": i},
    }


def qwen_prompt(content: str) -> str:
    """The 'qwen' template's rendering, written out by hand for the checks."""
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    )


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_tokenizer(tmp_path_factory.mktemp("toy_tokenizer"), list(PROMPTS) * 3)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)
