"""The predicted memory ledger of --dry-run, against transformers' own parameter counts and hand
arithmetic for the shipped 32B recipe."""

import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from mindspeed_rl.models.hf_config import hf_config_dict
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.workers.memory_plan import (
    GIB,
    param_counts,
    phase_ledger,
    predicted_bytes,
)

ROOT = Path(__file__).resolve().parents[2]


def _hf_numel(model_type: str, model) -> int:
    raw = hf_config_dict(model_type, model, model.padded_vocab_size, dtype="float32")
    config_cls = {"qwen2": transformers.Qwen2Config, "qwen3_moe": transformers.Qwen3MoeConfig}
    config = config_cls[model_type](**{k: v for k, v in raw.items() if k != "architectures"})
    import torch

    with torch.device("meta"):  # only the shapes matter
        hf = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize(
    "model_type,model,update",
    [
        ("qwen2", "tiny_qwen2", {}),
        ("qwen2", "tiny_qwen2", {"untie_embeddings_and_output_weights": False}),
        (
            "qwen3_moe",
            "qwen3_30b_a3b",
            {"num_layers": 2, "hidden_size": 64, "num_experts": 4, "moe_ffn_hidden_size": 32,
             "ffn_hidden_size": 96, "padded_vocab_size": 128, "kv_channels": 16},
        ),
    ],
)  # fmt: skip
def test_parameter_count_equals_transformers(model_type, model, update):
    config = load_run_config("dapo_qwen3_30b_a3b_A3" if "moe" in model_type else "quickstart_cpu")
    spec = config.models[model].model_copy(update=update)
    ours = param_counts(spec).total(spec.num_layers)
    # RMSNorm weights inside q/k norms, routers and biases included on both sides
    assert ours == _hf_numel(model_type, spec)


def test_qwen25_32b_a3_by_hand():
    config = load_run_config("dapo_qwen25_32b_A3")
    sizes = predicted_bytes(config)
    total = param_counts(config.model).total(config.model.num_layers)
    assert 32.7e9 < total < 32.9e9  # Qwen2.5-32B: 32.8B parameters
    # TP 8, DP 2, bf16, distributed optimizer (norms replicated: within 0.1%)
    assert sizes["actor_params"] == pytest.approx(2 * total / 8, rel=1e-3)
    assert sizes["actor_grads"] == pytest.approx(4 * total / 8, rel=1e-3)
    assert sizes["actor_optimizer"] == pytest.approx(12 * total / 8 / 2, rel=1e-3)
    infer_tp = config.generate_config.infer_tensor_parallel_size
    assert sizes["engine_weights"] == pytest.approx(2 * total / infer_tp, rel=1e-6)
    util = config.generate_config.gpu_memory_utilization
    assert sizes["kv_cache"] == pytest.approx(util * 64 * GIB - sizes["engine_weights"])


def test_phases_follow_the_offload_switches():
    on = phase_ledger(load_run_config("dapo_qwen25_32b_A3"))
    assert on["generate"]["actor_params"] == on["generate"]["actor_optimizer"] == 0
    assert on["sync"]["actor_grads"] == on["sync"]["actor_optimizer"] == 0
    assert on["update"]["engine_weights"] == on["update"]["kv_cache"] == 0
    off = phase_ledger(
        load_run_config(
            "dapo_qwen25_32b_A3", overrides=["generate_config.offload_train_optimizer=false"]
        )
    )
    assert off["generate"]["actor_optimizer"] == on["update"]["actor_optimizer"] > 0
    assert off["generate"]["actor_params"] == 0


def test_dry_run_prints_the_ledger_and_warns_on_a_phase_that_does_not_fit():
    run = subprocess.run(
        [sys.executable, "cli/train_dapo.py", "--config-name", "dapo_qwen25_32b_A3", "--dry-run",
         "--platform", "npu", "generate_config.device_memory_gb=40"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "# memory ledger" in run.stdout and "phases_gib_per_rank" in run.stdout
    # update holds 45.8 GiB per rank: more than 40
    assert "phase 'update' needs 45.8 GiB" in run.stderr
    assert "phase 'generate'" not in run.stderr  # 0.5 x 40 GiB


def test_a_kl_term_adds_the_reference_in_its_phase_only(tmp_path):
    dapo = phase_ledger(load_run_config("dapo_qwen25_32b_A3"))
    assert "ref_log_prob" not in dapo
    assert all(phase["reference"] == 0 for phase in dapo.values())
    kl = phase_ledger(
        load_run_config(
            "dapo_qwen25_32b_A3",
            overrides=["rl_config.use_kl_loss=true", f"actor_config.load={tmp_path}"],
        )
    )
    ref = kl["ref_log_prob"]
    # a second copy of the actor's params, next to the actor's own; nothing else
    assert ref["reference"] == ref["actor_params"] == dapo["update"]["actor_params"] > 0
    assert ref["actor_grads"] == ref["actor_optimizer"] == ref["kv_cache"] == 0
    assert all(kl[name]["reference"] == 0 for name in kl if name != "ref_log_prob")


def test_a_kv_cache_given_in_bytes_is_what_vllm_takes():
    config = load_run_config(
        "dapo_qwen25_32b_A3", overrides=["generate_config.kv_cache_memory_bytes=8589934592"]
    )
    assert predicted_bytes(config)["kv_cache"] == 8 * GIB
