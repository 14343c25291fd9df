"""The training config of the trainer tests: the quickstart config on the session's assets.

Responses are capped at ``TEST_MAX_TOKENS`` (the demo: 128) with the overlong penalty from
``TEST_MAX_TOKENS - TEST_OVERLONG_BUFFER`` tokens: a test iteration waits for its longest sample,
and at this cap the task's long tail (reference responses 20-140 tokens, p90 68) still runs into
the buffer and the cap, so every run shapes and truncates some responses.
"""

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.trainer.config_entry import load_run_config

TEST_MAX_TOKENS = 64
TEST_OVERLONG_BUFFER = 16


def training_config(assets, iterations, *extra):
    paths, _ = assets
    return load_run_config(
        CONFIG_NAME,
        overrides=[
            f"megatron_training.tokenizer_name_or_path={paths['hf']}",
            f"megatron_training.data_path={paths['data']}",
            f"actor_config.load={paths['mcore']}",
            f"megatron_training.train_iters={iterations}",
            "rl_config.validate_before_train=false",
            "rl_config.validation_interval=0",
            "rl_config.filter_groups_train_batch_size=8",
            "rl_config.mini_batch_size=4",
            "rl_config.filter_groups_max_batches=-1",
            f"rl_config.rollout_max_tokens={TEST_MAX_TOKENS}",
            f"generate_config.sampling_config.max_tokens={TEST_MAX_TOKENS}",
            f"rl_config.overlong_buffer={TEST_OVERLONG_BUFFER}",
            *extra,
        ],
    )
