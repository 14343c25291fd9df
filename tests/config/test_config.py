"""Config loading, validation and --dry-run: shipped configs pass, broken ones fail clearly."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mindspeed_rl.config import reference
from mindspeed_rl.config.loader import DEFAULT_CONFIG_DIR
from mindspeed_rl.config.plan import make_plan
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in DEFAULT_CONFIG_DIR.glob("*.yaml"))
BASE = "dapo_qwen25_32b_A3"


def _dry_run(*args: str) -> int:
    sys.path.insert(0, str(REPO / "cli"))
    try:
        import train_dapo
    finally:
        sys.path.pop(0)
    return train_dapo.main(["--dry-run", *args])


def test_the_four_ascend_recipes_are_shipped():
    assert {
        "dapo_qwen25_32b_A3",
        "dapo_qwen25_32b_A2_20k",
        "dapo_qwen3_32b_A3",
        "dapo_qwen3_30b_a3b_A3",
    } <= set(SHIPPED)


# the platform each shipped config is written for (the Ascend recipes: Atlas A2 / A3)
PLATFORM = {"quickstart_cpu": "cpu"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_dry_runs(name, capsys):
    assert _dry_run("--config-name", name, "--platform", PLATFORM.get(name, "npu")) == 0
    out = capsys.readouterr().out
    printed = list(yaml.safe_load_all(out.replace("# run plan\n", "---\n")))
    assert printed[-1]["plan"]["devices"] > 0


def test_recipe_values_and_plan():
    config = load_run_config(BASE)
    assert config.model.num_layers == 64 and config.model.padded_vocab_size == 152064
    assert config.rl_config.clip_ratio_high == 0.28
    plan = make_plan(config)
    assert (plan.tensor_parallel, plan.data_parallel, plan.rollout_engines) == (8, 2, 2)
    assert plan.samples_trained_per_iteration == 32 * 8
    # 32 prompts x 8 samples over DP 2 with micro-batch 1
    assert plan.micro_batches_per_mini_batch_per_dp_rank == 128

    moe = make_plan(load_run_config("dapo_qwen3_30b_a3b_A3"))
    assert (moe.tensor_parallel, moe.expert_parallel, moe.data_parallel) == (4, 2, 4)
    assert (moe.rollout_tensor_parallel, moe.rollout_expert_parallel) == (1, 8)


def test_overrides_are_typed_and_actor_config_overrides_megatron_training():
    config = load_run_config(
        BASE,
        overrides=[
            "rl_config.epochs=2",
            "megatron_training.seed=7",
            "rl_config.verifier_function=[acc_for_dapo,format]",
            "rl_config.verifier_weight=[1.0,0.5]",
            "actor_config.lr=2e-6",
        ],
    )
    assert config.rl_config.epochs == 2 and config.actor.seed == 7
    assert config.rl_config.verifier_weight == [1.0, 0.5]
    assert config.actor.lr == 2e-6
    # megatron_training carries global_batch_size, actor_config carries TP: both reach the actor
    assert config.actor.global_batch_size == 32 and config.actor.tensor_model_parallel_size == 8


def test_config_path_and_yaml_path(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "qwen25_32b.yaml").write_text(
        (DEFAULT_CONFIG_DIR / "model" / "qwen25_32b.yaml").read_text()
    )
    (tmp_path / "mine.yaml").write_text((DEFAULT_CONFIG_DIR / f"{BASE}.yaml").read_text())
    assert load_run_config("mine", tmp_path).actor.global_batch_size == 32
    assert load_run_config(str(tmp_path / "mine.yaml"), tmp_path).actor.global_batch_size == 32


def test_recognised_but_inert_keys_are_accepted():
    config = load_run_config(BASE, overrides=["rl_config.guarantee_order=false"])
    assert config.rl_config.n_samples_per_prompt == 8


# (overrides, dotted key the message must name, fragment of the message)
BROKEN_BY_OVERRIDE = [
    (["actor_config.tensor_model_paralel_size=8"], "actor_config.tensor_model_paralel_size",
     "did you mean 'tensor_model_parallel_size'"),
    (["rl_config.clip_ratio_hgh=0.3"], "rl_config.clip_ratio_hgh", "did you mean 'clip_ratio_high'"),
    (["megatron_training.global_batch_size=abc"], "megatron_training.global_batch_size",
     "valid integer"),
    (["actor_config.tensor_model_parallel_size='8'"], "actor_config.tensor_model_parallel_size",
     "valid integer"),
    (["actor_config.tensor_model_parallel_size=3"], "actor_config.tensor_model_parallel_size",
     "does not divide rl_config.actor_resource.num_npus"),
    (["actor_config.pipeline_model_parallel_size=3", "actor_config.tensor_model_parallel_size=1",
      "rl_config.actor_resource.num_npus=48"], "actor_config.pipeline_model_parallel_size",
     "does not divide num_layers"),
    (["actor_config.expert_model_parallel_size=2"], "actor_config.expert_model_parallel_size",
     "needs an MoE model"),
    (["rl_config.mini_batch_size=5"], "rl_config.mini_batch_size", "does not divide the 32"),
    (["actor_config.micro_batch_size=3"], "actor_config.micro_batch_size", "equal parts"),
    (["rl_config.rollout_max_tokens=400", "generate_config.sampling_config.max_tokens=400"],
     "rl_config.overlong_buffer", "smaller than rollout_max_tokens"),
    (["rl_config.filter_groups_metric=format"], "rl_config.filter_groups_metric",
     "not one of verifier_function"),
    (["rl_config.n_samples_per_prompt=1"], "rl_config.n_samples_per_prompt", ">= 2"),
    (["generate_config.infer_tensor_parallel_size=3"], "generate_config.infer_tensor_parallel_size",
     "does not divide num_npus"),
    (["rl_config.clip_ratio_high=1.2"], "rl_config.clip_ratio_high", "must be in (0, 1)"),
    (["rl_config.verifier_weight=[1.0,2.0]"], "rl_config.verifier_weight", "one weight per verifier"),
    (["generate_config.sampling_config.max_tokens=1024"], "rl_config.rollout_max_tokens",
     "differs from generate_config.sampling_config.max_tokens"),
    (["generate_config.max_model_len=3000"], "generate_config.max_model_len", "max_prompt_length"),
    (["rl_config.verifier_function=[acc_for_dapoo]", "rl_config.filter_groups_enable=false"],
     "rl_config.verifier_function", "Did you mean 'acc_for_dapo'"),
    (["rl_config.zmq_communication=true"], "rl_config.zmq_communication",
     "recognised, not supported yet"),
    (["rl_config.use_dynamic_bsz=true", "rl_config.update_max_packing_token_size=100"],
     "rl_config.update_max_packing_token_size", "cannot hold one sample"),
    (["rl_config.max_packing_token_size=8192"], "rl_config.max_packing_token_size",
     "read only with use_dynamic_bsz"),
    (["generate_config.infer_pipeline_parallel_size=2"],
     "generate_config.infer_pipeline_parallel_size", "Input should be 1"),
    (["actor_config.lr_decay_style=exp"], "actor_config.lr_decay_style", "'constant'"),
    (["actor_config.finetune=false", "actor_config.load=null"], "actor_config.load",
     "resume"),
    (["actor_config.model=qwen3_8b"], "actor_config.model", "not a model of this config"),
    (["rl_config"], "rl_config", "expected section.key=value"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "key", "fragment"), BROKEN_BY_OVERRIDE)
def test_broken_override_is_reported_with_its_key(overrides, key, fragment, capsys):
    assert _dry_run("--config-name", BASE, *overrides) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if f" {key}: " in line]
    assert lines, err
    assert any(fragment in line for line in lines), err


def _write(tmp_path: Path, text: str, model_text: str | None = None) -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    if model_text is not None:
        (tmp_path / "model" / "tiny.yaml").write_text(model_text)
    (tmp_path / "run.yaml").write_text(text)
    return tmp_path


TINY_MODEL = """tiny:
  num_layers: 2
  hidden_size: 64
  ffn_hidden_size: 128
  num_attention_heads: 4
  max_position_embeddings: 512
"""
TINY_RUN = """defaults:
  - model:
      - tiny
megatron_training:
  model: tiny
  global_batch_size: 4
  seq_length: 256
  train_iters: 2
rl_config:
  n_samples_per_prompt: 2
  max_prompt_length: 64
  mini_batch_size: 4
  rollout_max_tokens: 128
  overlong_buffer: 32
  actor_resource: {num_npus: 2}
generate_config:
  max_model_len: 256
  sampling_config: {max_tokens: 128}
"""

BROKEN_FILES = [
    (TINY_RUN.replace("      - tiny", "      - missing"), TINY_MODEL, "defaults.model: missing",
     "file not found"),
    (TINY_RUN + "reward_config:\n  x: 1\n", TINY_MODEL, "reward_config", "unknown section"),
    (TINY_RUN.replace("  train_iters: 2\n", ""), TINY_MODEL, "megatron_training.train_iters",
     "required key is missing"),
    (TINY_RUN, TINY_MODEL.replace("num_layers", "num_layer"), "model.tiny.num_layer",
     "did you mean 'num_layers'"),
    (TINY_RUN, TINY_MODEL + "  num_query_groups: 3\n", "model.tiny.num_query_groups",
     "does not divide num_attention_heads"),
    (TINY_RUN + "  : [\n", TINY_MODEL, "--config-name", "not valid YAML"),
    (TINY_RUN.replace("- model:", "- tokenizer:"), TINY_MODEL, "defaults.tokenizer",
     "unknown group"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "model_text", "key", "fragment"), BROKEN_FILES)
def test_broken_file_is_reported_with_file_and_key(tmp_path, text, model_text, key, fragment):
    config_dir = _write(tmp_path, text, model_text)
    with pytest.raises(ConfigError) as info:
        load_run_config("run", config_dir)
    matching = [p for p in info.value.problems if p.key.startswith(key)]
    assert matching, str(info.value)
    assert any(fragment in p.message for p in matching), str(info.value)
    assert all(p.where for p in matching)


def test_tiny_file_config_is_valid_and_problems_name_their_file(tmp_path):
    config_dir = _write(tmp_path, TINY_RUN, TINY_MODEL)
    assert load_run_config("run", config_dir).model.num_layers == 2
    _write(tmp_path, TINY_RUN, TINY_MODEL.replace("num_layers", "num_layer"))
    with pytest.raises(ConfigError) as info:
        load_run_config("run", config_dir)
    assert str(info.value.problems[0].where).endswith("model/tiny.yaml")


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_run_config(
            BASE,
            overrides=[
                "rl_config.typo_key=1",
                "rl_config.clip_ratio_high=1.5",
                "rl_config.verifier_function=[nope]",
                "generate_config.max_model_len=100",
            ],
        )
    keys = {p.key for p in info.value.problems}
    assert {
        "rl_config.typo_key",
        "rl_config.clip_ratio_high",
        "rl_config.verifier_function",
        "generate_config.max_model_len",
    } <= keys


def test_cli_dry_run_starts_no_ray_and_no_megatron():
    script = (
        "import sys, runpy; sys.argv = ['train_dapo.py', '--config-name', 'dapo_qwen25_32b_A3', "
        "'--dry-run', '--platform', 'npu']\n"
        "try:\n    runpy.run_path('cli/train_dapo.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('ray', 'megatron', 'torch_npu', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, capture_output=True)


def test_cli_exit_code_and_message_for_a_broken_config():
    proc = subprocess.run(
        [sys.executable, "cli/train_dapo.py", "--config-name", BASE, "--dry-run",
         "rl_config.epochs=zero"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "rl_config.epochs" in proc.stderr and proc.stdout == ""


def test_configuration_reference_is_up_to_date():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == reference.render(), (
        "run `make docs-config` and commit docs/configuration.md"
    )
