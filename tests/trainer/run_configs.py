"""The training config of the trainer tests: the quickstart config on the session's assets."""

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
from mindspeed_rl.trainer.config_entry import load_run_config


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
            *extra,
        ],
    )
