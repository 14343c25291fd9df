"""The shipped recipes turn on what the Ascend suite's DAPO recipes use for memory."""

import pytest

from mindspeed_rl.config.loader import DEFAULT_CONFIG_DIR
from mindspeed_rl.trainer.config_entry import load_run_config

SHIPPED = sorted(p.stem for p in DEFAULT_CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_sequence_parallelism_wherever_tensor_parallelism_allows_it(name):
    actor = load_run_config(name).actor
    assert actor.sequence_parallel == (actor.tensor_model_parallel_size > 1)
    # the Ascend suite's four DAPO recipes set no recompute key (flash attention keeps their
    # activations linear); a recipe that adds one must say which, consistently
    assert actor.recompute_granularity is None or actor.recompute_method is not None
