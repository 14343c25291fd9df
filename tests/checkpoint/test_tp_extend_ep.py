"""MindSpeed's ``moe_tp_extend_ep`` expert layout: converted both ways bit for bit, recorded, and
computing transformers' logits at TP 2 EP 2 (issue 26).

The layout (``models/placement.py``): shard ``mp_rank_<t>_<e>`` holds the whole experts
``[(e * TP + t) * n, ...)``, ``n = E / (TP * EP)``, as MindSpeed 2.3.0 (core 0.12.1)
``BaseMoELayer`` places them and MindSpeed-LLM's ``convert_hf2mg.py`` writes them. The tiny
Qwen3-MoE here has 8 experts, so each of the 4 shards holds 2 and their order within a shard
counts too.
"""

import argparse
import dataclasses
import shutil

import pytest
import torch

from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.logits_check import MegatronLogitsCase, hf_logits
from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
from tests.checkpoint import logits_case
from tests.checkpoint.conftest import read_safetensors
from tests.checkpoint.test_roundtrip import hf_to_mg, mg_to_hf
from tests.distributed_harness import run_distributed
from tests.models import tiny_hf

EXTEND = ["--moe-tp-extend-ep"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def moe8(tmp_path_factory):
    """A tiny Qwen3-MoE with 8 experts, bf16 safetensors shards."""
    root = tmp_path_factory.mktemp("moe8")
    return tiny_hf.save_tiny_model("qwen3_moe", root, seed=5, dtype=torch.bfloat16, num_experts=8)


def _strip_records(mg_dir, args: argparse.Namespace | None = None) -> None:
    """Rewrite every shard as MindSpeed-LLM writes it: no ``parallel_layout``, optionally its
    converter's ``args`` (which carry ``moe_tp_extend_ep``)."""
    for path in mg_dir.glob("release/mp_rank_*/model_optim_rng.pt"):
        payload = torch.load(path, weights_only=True)
        del payload["parallel_layout"]
        if args is not None:
            payload["args"] = args
        torch.save(payload, path)


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "per_expert"])
def test_hf_mg_hf_is_bit_identical_at_tp2_ep2(moe8, tmp_path, grouped):
    extra = EXTEND + (["--moe-grouped-gemm"] if grouped else [])
    assert hf_to_mg(moe8, tmp_path / "mg", (2, 1, 2), *extra) == 0
    files = mcore_layout.find_checkpoint(tmp_path / "mg")
    assert files.layout == mcore_layout.ShardLayout(2, 1, 2, moe_tp_extend_ep=True)
    shard = mcore_layout.load_shard(files.path(1, 0, 1))["model"]  # experts 6 and 7, whole
    if grouped:
        assert shard["decoder.layers.0.mlp.experts.weight1"].shape == (32, 2 * 2 * 16)
    else:
        assert "decoder.layers.0.mlp.experts.local_experts.1.linear_fc2.weight" in shard
        assert "decoder.layers.0.mlp.experts.local_experts.2.linear_fc2.weight" not in shard
        expected = read_safetensors(moe8)["model.layers.0.mlp.experts.7.down_proj.weight"]
        assert torch.equal(
            shard["decoder.layers.0.mlp.experts.local_experts.1.linear_fc2.weight"], expected
        )

    assert mg_to_hf(tmp_path / "mg", tmp_path / "hf", "--max-shard-size", "30KB") == 0
    original, restored = read_safetensors(moe8), read_safetensors(tmp_path / "hf")
    assert restored.keys() == original.keys()
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype and torch.equal(restored[key], tensor), key


def test_mindspeed_llm_shards_are_read_by_their_args_or_by_the_flag(moe8, tmp_path, capsys):
    """Shards without this project's record: MindSpeed-LLM's ``args`` decides; with no record at
    all the grouped shapes equal the default layout's, so only ``--moe-tp-extend-ep`` gets the
    experts right (without it every expert tensor is restored to the wrong number)."""
    assert hf_to_mg(moe8, tmp_path / "mg", (2, 1, 2), *EXTEND, "--moe-grouped-gemm") == 0
    original = read_safetensors(moe8)

    by_args = tmp_path / "by_args"
    shutil.copytree(tmp_path / "mg", by_args)
    _strip_records(by_args, argparse.Namespace(moe_tp_extend_ep=True, num_layers=2))
    assert mcore_layout.find_checkpoint(by_args, num_layers=2).layout.moe_tp_extend_ep
    assert mg_to_hf(by_args, tmp_path / "hf_args", "--hf-config-dir", str(moe8)) == 0
    restored = read_safetensors(tmp_path / "hf_args")
    assert all(torch.equal(restored[k], t) for k, t in original.items())

    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "mg", bare)
    _strip_records(bare)
    assert mg_to_hf(bare, tmp_path / "hf_flag", "--hf-config-dir", str(moe8), *EXTEND) == 0
    restored = read_safetensors(tmp_path / "hf_flag")
    assert all(torch.equal(restored[k], t) for k, t in original.items())
    assert mg_to_hf(bare, tmp_path / "hf_wrong", "--hf-config-dir", str(moe8)) == 0
    wrong = read_safetensors(tmp_path / "hf_wrong")
    moved = [k for k in original if ".experts." in k and not torch.equal(wrong[k], original[k])]
    assert len(moved) == len([k for k in original if ".experts." in k])
    capsys.readouterr()

    # a record and the flag that contradict it: refused by name, nothing written
    by_default = tmp_path / "default"
    assert hf_to_mg(moe8, by_default, (2, 1, 2), "--moe-grouped-gemm") == 0
    assert mg_to_hf(by_default, tmp_path / "refused", *EXTEND) == 2
    err = capsys.readouterr().err
    assert "written with moe_tp_extend_ep=false" in err and "--moe-tp-extend-ep" in err, err
    assert not (tmp_path / "refused").exists()


def test_dense_model_and_undivided_experts_are_refused(tiny_models, moe8, tmp_path, capsys):
    assert hf_to_mg(tiny_models["qwen3"], tmp_path / "dense", (2, 1, 1), *EXTEND) == 2
    assert "moe_tp_extend_ep needs a MoE model" in capsys.readouterr().err
    assert hf_to_mg(moe8, tmp_path / "eight", (2, 1, 8), *EXTEND) == 2
    err = capsys.readouterr().err
    assert "TP x EP = 2 x 8" in err and "valid EP sizes at TP 2: [1, 2, 4]" in err, err


@pytest.mark.slow
@pytest.mark.megatron_smoke
def test_tp2_ep2_logits_match_transformers(moe8, tmp_path):
    """4 CPU ranks, megatron-core with expert TP 1 and EP over TP x EP = 4 ranks, each loading
    its own shard through the training load path; grouped shards run as SequentialMLP (CPU),
    with sequence parallelism (megatron-core 0.12 requires it here) over an odd length."""
    tokens = tiny_hf.prompts(seq=11)
    cases = []
    for grouped in (True, False):
        out = tmp_path / f"mg-{grouped}"
        extra = EXTEND + (["--moe-grouped-gemm"] if grouped else [])
        assert hf_to_mg(moe8, out, (2, 1, 2), *extra) == 0
        plan = plan_mcore_to_hf(out)
        assert plan.files.layout.moe_tp_extend_ep
        label = "grouped" if grouped else "per_expert"
        model, vocab = plan.mapping.model, plan.mapping.vocab_size
        cases.append((label, MegatronLogitsCase(plan.files, model, vocab, tokens)))
    # the same grouped shards without a record, read as the default layout: other experts
    shutil.copytree(tmp_path / "mg-True", tmp_path / "unrecorded")
    _strip_records(tmp_path / "unrecorded")
    plan = plan_mcore_to_hf(tmp_path / "unrecorded")
    assert not plan.files.layout.moe_tp_extend_ep
    wrong = MegatronLogitsCase(plan.files, plan.mapping.model, plan.mapping.vocab_size, tokens)
    cases.append(("read_as_default", wrong))

    results = {}
    for rank_results in run_distributed(logits_case.run_cases, 4, cases):
        results.update(rank_results)
    reference = hf_logits(moe8, tokens)
    assert reference.abs().max() > 1.0  # logits of O(1): a misplaced expert cannot hide
    for label in ("grouped", "per_expert"):
        diff = (results[label] - reference).abs().max().item()
        assert diff <= TOLERANCE, f"{label}: max abs diff {diff:.3e}"
    assert (results["read_as_default"] - reference).abs().max().item() > 1e-2


def test_shard_layout_records_the_flag(moe8, tmp_path):
    assert hf_to_mg(moe8, tmp_path / "mg", (2, 1, 2), *EXTEND) == 0
    files = mcore_layout.find_checkpoint(tmp_path / "mg")
    payload = mcore_layout.load_shard(files.path(0, 0, 0))
    assert payload["parallel_layout"] == {
        "tp": 2, "pp": 1, "ep": 2, "moe_tp_extend_ep": True, "pipeline_layers": None,
    }  # fmt: skip
    parallel = files.layout.to_parallel()
    assert parallel.expert_sizes() == (1, 4)
    assert dataclasses.replace(
        files.layout, moe_tp_extend_ep=False
    ).to_parallel().expert_sizes() == (2, 2)


def _dry_run(capsys, *overrides: str) -> tuple[int, str, str]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))
    try:
        import train_dapo
    finally:
        sys.path.pop(0)
    code = train_dapo.main(["--dry-run", "--config-name", "dapo_qwen3_30b_a3b_A3", *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_recipe_key_parses_and_the_run_plan_names_the_layout(capsys):
    code, out, _ = _dry_run(capsys, "actor_config.moe_tp_extend_ep=true")
    assert code == 0
    assert "expert_layout: 'moe_tp_extend_ep: 16 whole experts per rank over TP x EP = 8" in out
    code, out, _ = _dry_run(capsys)
    assert code == 0 and "expert_layout: 64 experts per EP rank, each split over TP = 4" in out


def test_the_layout_without_sequence_parallelism_is_refused_at_dry_run(capsys):
    code, _, err = _dry_run(
        capsys,
        "actor_config.moe_tp_extend_ep=true",
        "megatron_training.sequence_parallel=false",
    )
    assert code == 2
    assert "moe_tp_extend_ep" in err and "sequence_parallel: true" in err, err
