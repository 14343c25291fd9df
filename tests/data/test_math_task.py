"""The quickstart's chain-of-thought task: arithmetic checked independently of the generator, the
reference responses scored by the real verifier, the documented length distribution reproduced."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import transformers

from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
from mindspeed_rl.quickstart import math_task
from mindspeed_rl.quickstart.tiny_model import build_tiny_hf_model
from mindspeed_rl.rewards.scoring import RewardScorer
from mindspeed_rl.trainer.config_entry import load_run_config

_QUESTION = re.compile(r"^Add (\d), (\d+) times\. End with Answer: N$")
_LINE = re.compile(r"^(\d+):(\d+)$")


def test_the_same_seed_gives_the_same_problems():
    assert math_task.make_problems(50, seed=3) == math_task.make_problems(50, seed=3)
    assert math_task.make_problems(50, seed=3) != math_task.make_problems(50, seed=4)


def test_every_reference_solution_is_right_line_by_line():
    problems = math_task.make_problems(400, seed=1)
    for p in problems:
        asked = _QUESTION.match(p.question)
        assert asked, p.question
        step, count = int(asked[1]), int(asked[2])
        assert math_task.MIN_STEP <= step <= math_task.MAX_STEP
        assert math_task.MIN_COUNT <= count <= math_task.MAX_COUNT
        *lines, last = p.solution.split("\n")
        assert len(lines) == count
        total = 0
        for number, line in enumerate(lines, start=1):
            seen = _LINE.match(line)
            assert seen, line
            total += step
            assert (int(seen[1]), int(seen[2])) == (number, total)
        assert total <= math_task.MAX_PRODUCT and total == step * count
        assert last == f"Answer: {total}" and p.answer == str(total)
    # the long tail: most problems are short, a few use many lines
    counts = [p.count for p in problems]
    assert sorted(counts)[len(counts) // 2] <= 6 and max(counts) >= 18
    # answers spread: no constant guess is right on more than a tenth of the problems
    answers = [p.answer for p in problems]
    assert max(answers.count(a) for a in set(answers)) < len(answers) / 10


def test_the_real_verifier_scores_the_final_answer():
    problems = math_task.make_problems(40, seed=2)
    scorer = RewardScorer(["acc_for_dapo"], [1.0], verifier_timeout=5.0, verifier_parallel=1)
    right = [p.solution for p in problems]
    wrong = [p.solution.rsplit(" ", 1)[0] + f" {int(p.answer) + 1}" for p in problems]
    # an intermediate total is no answer: a response cut before its last line has none
    cut = ["\n".join(p.solution.split("\n")[:-1]) for p in problems]
    scores = scorer.score(right + wrong + cut, [p.answer for p in problems] * 3).scores
    assert scores == [1.0] * 40 + [-1.0] * 80


def test_parquet_rows_follow_the_dapo_math_schema(tmp_path):
    problems = math_task.make_problems(5, seed=0)
    rows = pq.read_table(math_task.write_parquet(problems, tmp_path / "t.parquet")).to_pylist()
    assert rows[2] == {
        "data_source": math_task.DATA_SOURCE,
        "prompt": [{"role": "user", "content": problems[2].question}],
        "ability": "MATH",
        "reward_model": {"style": "rule", "ground_truth": problems[2].answer},
        "extra_info": {"index": 2},
    }


def test_the_documented_length_distribution_is_what_the_quickstart_gets(tmp_path):
    problems = math_task.make_problems(2400, seed=0)  # the quickstart's set and tokenizer
    path = build_toy_tokenizer(tmp_path / "tok", math_task.corpus(problems[:500]), vocab_size=400)
    model = load_run_config("quickstart_cpu").model
    # the tokenizer as the run loads it, beside the model's Qwen2 config (numbers as digits)
    _, tokenizer = build_tiny_hf_model(model, path, tmp_path / "hf")
    assert tokenizer.tokenize("1:16") == ["1", ":", "1", "6"]
    again = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert again.tokenize(problems[0].solution) == tokenizer.tokenize(problems[0].solution)
    lengths = math_task.reference_lengths(problems, tokenizer)
    assert math_task.length_summary(lengths) == math_task.LENGTH_DISTRIBUTION
