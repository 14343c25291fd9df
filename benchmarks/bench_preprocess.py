"""Preprocessing throughput vs. the tokenizer alone, on the same templated texts, same run.

    python benchmarks/bench_preprocess.py                   # 20k synthetic DAPO-Math-17k rows
    python benchmarks/bench_preprocess.py --rows 5000 --workers 1 2 4 --tokenizer /models/qwen25-7b

For each worker count it times

- pipeline: ``preprocess_dataset`` end to end on a parquet file (read, handler, template,
  tokenize prompt + ground truth, round-trip check, write the indexed datasets, commit);
- tokenizer alone: the same number of single-threaded processes tokenizing the already templated
  prompt texts (the same batched call the pipeline makes), returning only token counts.

Both include process-pool start-up. Each is repeated ``--repeats`` times and the best time kept
(the machine may be shared). Goal: pipeline >= 0.8x the tokenizer alone at equal workers.
Without ``--tokenizer`` a byte-level BPE tokenizer is trained on the synthetic texts
(``mindspeed_rl.data.toy_tokenizer``); no model hub is needed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from mindspeed_rl.data.handlers import build_handler
from mindspeed_rl.data.preprocess import CHUNK_ROWS, preprocess_dataset, single_threaded_tokenizer
from mindspeed_rl.data.preprocess_config import PreprocessConfig
from mindspeed_rl.data.templates import load_prompt_formatter
from mindspeed_rl.data.tokenization import encode_texts, load_tokenizer
from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer

HANDLER = "Math17kAlpacaStyleInstructionHandler"
MAP_KEYS = {"prompt": "prompt", "query": "", "response": "reward_model", "system": ""}
DAPO_INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be of "
    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    '{problem}\n\nRemember to put your answer on its own line after "Answer:".'
)
WORDS = (
    "Let triangle circle integer real number positive sum product of the and is are such that "
    "find compute determine how many ways where with each for all points on a line segment area "
    "perimeter probability remainder when divided by sequence term polynomial roots coefficient "
    "$x$ $y$ $n$ $a_n$ $\\frac{1}{2}$ $\\sqrt{3}$ $x^2+y^2=25$ $ABC$ $\\angle BAC$ $\\pi$"
).split()


def synthetic_rows(num_rows: int, seed: int = 0) -> list[dict[str, Any]]:
    """DAPO-Math-17k-shaped rows with 40-120 word problems (about 100-300 tokens templated)."""
    rng = random.Random(seed)
    rows = []
    for i in range(num_rows):
        words = [
            rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(0, 9999))
            for _ in range(rng.randint(40, 120))
        ]
        problem = " ".join(words).capitalize() + "?"
        rows.append(
            {
                "data_source": "math_dapo",
                "prompt": [{"role": "user", "content": DAPO_INSTRUCTION.format(problem=problem)}],
                "ability": "MATH",
                "reward_model": {"style": "rule", "ground_truth": str(rng.randint(-999, 99999))},
                "extra_info": {"index": i},
            }
        )
    return rows


def templated_prompts(rows: list[dict[str, Any]], tokenizer: Any, prompt_type: str) -> list[str]:
    handler = build_handler(HANDLER, MAP_KEYS, ["labels"])
    formatter = load_prompt_formatter(prompt_type, tokenizer)
    return [formatter.render(handler(row).messages) for row in rows]


_TOKENIZER: Any = None


def _init_tokenizer(path: str) -> None:
    import os

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as the pipeline's workers
    global _TOKENIZER
    _TOKENIZER = load_tokenizer(path)


def _count_tokens(texts: list[str]) -> int:
    return sum(len(ids) for ids in encode_texts(_TOKENIZER, texts))


def tokenizer_alone(texts: list[str], tokenizer_path: str, tokenizer: Any, workers: int) -> float:
    """Seconds to tokenize ``texts`` in CHUNK_ROWS batches with ``workers`` processes."""
    chunks = [texts[i : i + CHUNK_ROWS] for i in range(0, len(texts), CHUNK_ROWS)]
    start = time.perf_counter()
    if workers == 1:  # one single-threaded tokenizer, as the pipeline's workers: 1
        with single_threaded_tokenizer():
            total = sum(sum(len(ids) for ids in encode_texts(tokenizer, c)) for c in chunks)
    else:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_init_tokenizer, initargs=(tokenizer_path,)) as pool:
            total = sum(pool.imap(_count_tokens, chunks))
    elapsed = time.perf_counter() - start
    assert total > 0
    return elapsed


def pipeline(
    parquet: Path, tokenizer_path: str, out: Path, workers: int, prompt_type: str
) -> float:
    config = PreprocessConfig.from_dict(
        {
            "input": str(parquet),
            "tokenizer_name_or_path": tokenizer_path,
            "output_prefix": str(out / "data"),
            "handler_name": HANDLER,
            "workers": workers,
            "log_interval": 10**9,
            "prompt_type": prompt_type,
            "dataset_additional_keys": ["labels"],
            "map_keys": MAP_KEYS,
        }
    )
    start = time.perf_counter()
    summary = preprocess_dataset(config)
    elapsed = time.perf_counter() - start
    assert summary.written == summary.read, summary.format()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizer", help="a Hugging Face tokenizer dir (default: toy BPE)")
    parser.add_argument("--prompt-type", default="qwen")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        rows = synthetic_rows(args.rows)
        parquet = tmp_path / "dapo.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        if args.tokenizer:
            tokenizer_path = args.tokenizer
        else:
            corpus = [row["prompt"][0]["content"] for row in rows[:2000]]
            tokenizer_path = str(build_toy_tokenizer(tmp_path / "tok", corpus, vocab_size=8192))
        tokenizer = load_tokenizer(tokenizer_path)
        texts = templated_prompts(rows, tokenizer, args.prompt_type)
        num_tokens = sum(len(ids) for ids in encode_texts(tokenizer, texts))
        # warm-up: imports (megatron-core, pyarrow) and page cache, outside the timings
        pipeline(parquet, tokenizer_path, tmp_path / "warm", 1, args.prompt_type)

        print(
            f"rows: {args.rows}, templated prompt tokens: {num_tokens} "
            f"({num_tokens / args.rows:.0f}/row), tokenizer: {tokenizer_path}, "
            f"vocab {len(tokenizer)}, prompt_type {args.prompt_type}, best of {args.repeats}"
        )
        print(f"{'workers':>7} {'pipeline rows/s':>16} {'tokenizer rows/s':>17} {'ratio':>6}")
        for workers in args.workers:
            best_pipe, best_tok = float("inf"), float("inf")
            for repeat in range(args.repeats):
                best_tok = min(best_tok, tokenizer_alone(texts, tokenizer_path, tokenizer, workers))
                out = tmp_path / f"out_{workers}_{repeat}"
                best_pipe = min(
                    best_pipe, pipeline(parquet, tokenizer_path, out, workers, args.prompt_type)
                )
            pipe_rate, tok_rate = args.rows / best_pipe, args.rows / best_tok
            print(f"{workers:>7} {pipe_rate:>16.0f} {tok_rate:>17.0f} {pipe_rate / tok_rate:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
