"""Converted checkpoints compute transformers' logits (fp32, max abs diff <= 1e-4) in every layout.

The checkpoints are written by the real conversion (``convert_hf_to_mcore``) and run by the same
code as ``cli/convert_ckpt.py --verify`` (``logits_check.megatron_rank_logits``): each rank builds
its GPTModel with ``models.gpt_builder`` and loads its own ``mp_rank_*`` shard.
"""

from pathlib import Path

import pytest
import torch

from cli.convert_ckpt import main
from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
from mindspeed_rl.checkpoint.logits_check import MegatronLogitsCase, hf_logits
from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
from tests.checkpoint import logits_case
from tests.distributed_harness import run_distributed
from tests.models import tiny_hf

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4
BASIC = [(1, 1, 1), (2, 1, 1), (1, 2, 1)]
SMOKE = [
    ("qwen2", (2, 1, 1), False),
    ("qwen2_tied", (1, 2, 1), False),
    ("qwen3_moe", (1, 1, 2), True),
]
FULL = [
    (name, layout, False)
    for name in sorted(tiny_hf.MODELS)
    for layout in BASIC + ([(1, 1, 2)] if name == "qwen3_moe" else [])
    if (name, layout, False) not in SMOKE
]


def _case(hf_dir: Path, out: Path, layout, grouped: bool, tokens) -> MegatronLogitsCase:
    convert_hf_to_mcore(
        HfToMcoreOptions(
            hf_dir, out, mcore_layout.ShardLayout(*layout), make_vocab_size_divisible_by=16,
            grouped_experts=grouped,
        )
    )  # fmt: skip
    plan = plan_mcore_to_hf(out)
    return MegatronLogitsCase(plan.files, plan.mapping.model, plan.mapping.vocab_size, tokens)


def _check(tiny_models, tmp_path, cases) -> None:
    tokens = tiny_hf.prompts()
    references, spawned = {}, []
    for name, layout, grouped in cases:
        label = f"{name}-{layout}{'-grouped' if grouped else ''}"
        spawned.append((label, _case(tiny_models[name], tmp_path / label, layout, grouped, tokens)))
        if name not in references:
            references[name] = hf_logits(tiny_models[name], tokens)
    results = {}
    for rank_results in run_distributed(logits_case.run_cases, 2, spawned):
        results.update(rank_results)
    assert sorted(results) == sorted(label for label, _ in spawned)
    for (name, _, _), (label, _) in zip(cases, spawned):
        reference = references[name]
        assert reference.abs().max() > 1.0  # logits of O(1): a mapping error cannot hide
        diff = (results[label] - reference).abs().max().item()
        assert diff <= TOLERANCE, f"{label}: max abs diff {diff:.3e}"


@pytest.mark.megatron_smoke
def test_smoke_tp2_tied_pp2_grouped_ep2_match_transformers(tiny_models, tmp_path):
    _check(tiny_models, tmp_path, SMOKE)


def test_every_model_in_every_layout_matches_transformers(tiny_models, tmp_path):
    _check(tiny_models, tmp_path, FULL)


def _hf_to_mg_args(hf_dir, out, tp):
    return [
        "--use-mcore-models", "--model-type", "GPT", "--model-type-hf", "qwen3-moe",
        "--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(hf_dir),
        "--save-dir", str(out), "--target-tensor-parallel-size", str(tp),
    ]  # fmt: skip


def test_cli_verify_reports_and_fails_beyond_tolerance(tiny_models, tmp_path, capsys):
    hf_dir = tiny_models["qwen3_moe"]
    args = _hf_to_mg_args(hf_dir, tmp_path / "mg", 2)
    assert main(args + ["--verify", "--verify-tolerance", "1e-4", "--verify-seq-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "TP=2 PP=1 EP=1 vs transformers (fp32): max abs diff" in out
    assert "max rel diff" in out and "logits match within 0.0001" in out

    # one expert's weights nudged on one TP rank: the check must notice
    path = mcore_layout.find_checkpoint(tmp_path / "mg").path(1, 0, 0)
    payload = torch.load(path, weights_only=True)
    name = "decoder.layers.1.mlp.experts.local_experts.3.linear_fc2.weight"
    payload["model"][name] = payload["model"][name] * 1.01
    torch.save(payload, path)
    verify = ["--verify", "--load-dir", str(tmp_path / "mg"), "--hf-dir", str(hf_dir)]
    assert main(verify + ["--verify-tolerance", "1e-4", "--verify-seq-length", "8"]) == 1
    captured = capsys.readouterr()
    assert "logits differ: max abs diff" in captured.err
