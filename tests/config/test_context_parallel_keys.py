"""context_parallel_size / context_parallel_algo: honoured (the 20k recipe's CP 2 reaches the
TransformerConfig fields, the run plan and the DP size), refused by name where they cannot run."""

import pytest

from mindspeed_rl.config.checks import data_parallel_size
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.workers.actor import model_build_options, parallel_and_memory_fields

RECIPE = "dapo_qwen25_32b_A2_20k"  # 64 NPUs, TP 8 PP 2 CP 2


def test_the_20k_recipe_runs_cp2_and_dp2():
    config = load_run_config(RECIPE)
    assert config.actor.context_parallel_size == 2
    assert config.actor.context_parallel_algo == "megatron_cp_algo"
    assert parallel_and_memory_fields(config.actor)["context_parallel_size"] == 2
    assert data_parallel_size(config) == 2


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("actor_config.context_parallel_size=3", "actor_config.context_parallel_size",
         "TP x PP x CP = 8 x 2 x 3 does not divide"),
        ("actor_config.context_parallel_algo=ulysses_cp_algo",
         "actor_config.context_parallel_algo", "megatron_cp_algo"),
    ],
)  # fmt: skip
def test_layouts_and_algorithms_that_cannot_run_are_refused_by_name(override, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_run_config(RECIPE, overrides=[override])
    text = str(info.value)
    assert key in text and fragment in text, text


def test_the_cpu_attention_refuses_context_parallelism_with_one_message():
    actor = load_run_config(RECIPE).actor  # this CI host is a CPU one
    with pytest.raises(ValueError, match="actor_config.context_parallel_size=2: context "):
        model_build_options(actor)


@pytest.mark.parametrize(
    ("remove_padding", "flash", "refused"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_mindspeed_cp_needs_packed_sequences(monkeypatch, remove_padding, flash, refused):
    """Where MindSpeed takes the dense host mask (no flash attention), CP is refused for padded
    rows (the mask would be of the whole rows, the ranks see L / CP) and runs with packing; its
    flash attention builds its own mask: no host mask, padded rows too."""
    from types import SimpleNamespace

    from mindspeed_rl.models import layer_specs
    from mindspeed_rl.workers.packing import micro_layout

    monkeypatch.setattr(layer_specs, "platform_backend", lambda: layer_specs.MINDSPEED)
    config = load_run_config(
        RECIPE,
        overrides=[
            f"rl_config.use_remove_padding={str(remove_padding).lower()}",
            f"megatron_training.use_flash_attn={str(flash).lower()}",
        ],
    )
    transformer_config = SimpleNamespace(variable_seq_lengths=False)
    if refused:
        with pytest.raises(ValueError, match="needs rl_config.use_remove_padding: true"):
            micro_layout(config.rl_config, config.actor, transformer_config)
    else:
        layout = micro_layout(config.rl_config, config.actor, transformer_config)
        assert layout.segment_multiple == 4 and layout.host_mask == (not flash)
