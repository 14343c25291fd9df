"""Run by test_expected_warnings.py in a fresh interpreter (``python -W always``): what a Ray
worker does -- import the worker module, build the Megatron actor -- then the same build with the
project's filters removed, as the control that the build does warn."""

import sys
import tempfile
import warnings

import mindspeed_rl.workers.integrated  # noqa: F401  (the worker's imports)
from mindspeed_rl.config.schema import MegatronConfig, RLConfig
from mindspeed_rl.platform.distributed import ParallelLayout, destroy_distributed, init_distributed
from tests.workers.actor_case import MODEL


def build_actor() -> None:
    from mindspeed_rl.workers.actor import MegatronActor

    rl = RLConfig(actor_resource={"num_npus": 1}, n_samples_per_prompt=2, max_prompt_length=6,
                  mini_batch_size=4)  # fmt: skip
    cfg = MegatronConfig(model="tiny", global_batch_size=4, seq_length=32, train_iters=1)
    MegatronActor(MODEL, cfg, rl, ParallelLayout(), total_optimizer_steps=1)


with tempfile.NamedTemporaryFile() as rendezvous:
    init_distributed(ParallelLayout(), seed=1, init_method=f"file://{rendezvous.name}")
    try:
        build_actor()
        print("--- control", file=sys.stderr, flush=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("always")
            build_actor()
        for w in caught:
            print(f"control: {w.message}", file=sys.stderr)
    finally:
        destroy_distributed()
