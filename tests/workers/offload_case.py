"""Rank bodies for test_offload.py: the integrated worker through whole iterations on a simulated
device, with and without offload, recording what training, the engine and checkpoints hold."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tests.distributed_harness import rendezvous
from tests.simulated_device import simulated_device

PROMPTS, PROMPT_LEN, SAMPLES, NEW_TOKENS = 4, 5, 2, 6
OFFLOAD_KEYS = ("offload_train_param", "offload_train_grad", "offload_train_optimizer")


def build_assets(workdir: Path) -> dict[str, str]:
    """Tokenizer, tiny Qwen2 (random weights) and its Megatron-core conversion."""
    from mindspeed_rl.checkpoint import mcore_layout
    from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
    from mindspeed_rl.quickstart.tiny_model import build_tiny_hf_model
    from mindspeed_rl.trainer.config_entry import load_run_config

    model = load_run_config(CONFIG_NAME).model
    corpus = [f"{a} + {b} = {a + b}" for a in range(30) for b in range(30)]
    tokenizer_dir = build_toy_tokenizer(workdir / "tokenizer", corpus, vocab_size=300)
    build_tiny_hf_model(model, tokenizer_dir, workdir / "hf", seed=3)
    convert_hf_to_mcore(
        HfToMcoreOptions(hf_dir=workdir / "hf", save_dir=workdir / "mcore",
                         layout=mcore_layout.ShardLayout(),
                         padded_vocab_size=model.padded_vocab_size, force=True)
    )  # fmt: skip
    return {"hf": str(workdir / "hf"), "mcore": str(workdir / "mcore")}


def run_config(
    assets: dict[str, str], *, bf16: bool, distributed_optimizer: bool, offload: bool,
    kl: bool = False,
):  # fmt: skip
    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME
    from mindspeed_rl.trainer.config_entry import load_run_config

    return load_run_config(
        CONFIG_NAME,
        overrides=[
            f"megatron_training.tokenizer_name_or_path={assets['hf']}",
            f"actor_config.load={assets['mcore']}",
            "rl_config.actor_resource.num_npus=1",
            f"megatron_training.bf16={str(bf16).lower()}",
            f"megatron_training.use_distributed_optimizer={str(distributed_optimizer).lower()}",
            "actor_config.lr=0.01",
            *(f"generate_config.{key}={str(offload).lower()}" for key in OFFLOAD_KEYS),
            *(["rl_config.use_kl_loss=true", "rl_config.init_kl_coef=0.5"] if kl else []),
        ],
    )


def _update_batch(prompts: torch.Tensor, out, iteration: int, pad: int):
    from mindspeed_rl.workers.actor import UpdateBatch
    from mindspeed_rl.workers.rows import to_megatron_rows

    rows_prompts = prompts.repeat_interleave(SAMPLES, dim=0)
    rows = to_megatron_rows(
        rows_prompts, torch.ones_like(rows_prompts), out.responses, out.response_mask, pad
    )
    g = torch.Generator().manual_seed(100 + iteration)
    advantages = torch.randn(len(rows_prompts), 1, generator=g).expand_as(out.response_mask)
    return rows, UpdateBatch(rows, out.response_mask, advantages.contiguous(), None)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if "_extra" not in k}


def run_iterations(config, iterations: int, save_root: str) -> dict:
    """``iterations`` x (generate, old log-probs, [reference log-probs,] update, sync) on one
    rank, then a checkpoint. With a KL term the reference also scores iteration 0's rows every
    iteration (``fixed_ref_log_probs``): a frozen, offloaded model must give the same values."""
    from megatron.core import parallel_state as ps

    from mindspeed_rl.checkpoint import mcore_layout
    from mindspeed_rl.rollout.sampling import SamplingParams
    from mindspeed_rl.workers.batch_plan import equal_micro_batches
    from mindspeed_rl.workers.integrated import IntegratedWorker

    worker = IntegratedWorker(0)
    worker.setup(config, world_size=1, local_rank=0, master_addr="127.0.0.1", master_port=1,
                 total_optimizer_steps=iterations)  # fmt: skip
    try:
        g = torch.Generator().manual_seed(7)
        prompts = torch.randint(3, 250, (PROMPTS, PROMPT_LEN), generator=g)
        actor, engine, logprobs, fixed_ref, metrics = [], [], [], [], []
        first_rows = None
        for it in range(iterations):
            params = SamplingParams(n=SAMPLES, max_tokens=NEW_TOKENS, temperature=1.0, seed=it)
            out = worker.generate(prompts.tolist(), params)
            rows, batch = _update_batch(prompts, out, it, worker.pad_token_id)
            first_rows = first_rows or rows
            logprobs.append(worker.compute_log_prob(rows, 4))
            batch.old_log_probs = logprobs[-1]
            if worker.reference is not None:
                batch.ref_log_probs = worker.compute_ref_log_prob(rows, 4)
                fixed_ref.append(worker.compute_ref_log_prob(first_rows, 4))
            micros = equal_micro_batches(len(batch), mini_batches=1, rows_per_micro=4)
            metrics.append(worker.update(batch, micros, epochs=1))
            actor.append(_weights(worker.actor.module))  # resident until the sync releases them
            worker.sync_weights()
            engine.append(_weights(worker.engine.model))
        # a rank dealt no prompts still calls its engine (vLLM's data-parallel peers need it)
        engine_calls = []
        generate = worker.engine.generate
        worker.engine.generate = lambda p, *rest: engine_calls.append(list(p)) or generate(p, *rest)
        empty_share = worker.generate([], params)
        worker.engine.generate = generate
        shard = Path(worker.save_checkpoint(save_root, iterations))
        payload = mcore_layout.load_shard(shard, mmap=False)
        checkpoint = {k: v.clone() for k, v in payload["model"].items() if "_extra" not in k}
        return {
            "actor": actor,
            "engine": engine,
            "log_probs": logprobs,
            "fixed_ref_log_probs": fixed_ref,
            "metrics": metrics,
            "timed": sorted(worker.pop_compute_seconds()),
            "checkpoint": checkpoint,
            "ledger": worker.memory_ledger(),
            "host_stash_bytes": worker.offloader.stash.host_bytes,
            "empty_share": (engine_calls, empty_share),
        }
    finally:
        ps.destroy_model_parallel()


def run_matrix(rank: int, world_size: int, assets: dict[str, str]) -> dict:
    """Every (bf16, distributed optimizer) pair, offload on and off, under the simulated device."""
    torch.distributed.init_process_group("gloo", init_method=rendezvous("offload"), rank=0,
                                         world_size=1)  # fmt: skip
    from megatron.core.tensor_parallel import layers

    results = {}
    initialised = []
    original_init = layers._initialize_affine_weight_cpu

    def counting_init(*args, **kwargs):
        initialised.append(1)
        return original_init(*args, **kwargs)

    layers._initialize_affine_weight_cpu = counting_init
    with simulated_device() as moves, tempfile.TemporaryDirectory() as root:
        for bf16 in (False, True):
            for dist_opt in (False, True):
                for offload in (False, True):
                    config = run_config(assets, bf16=bf16, distributed_optimizer=dist_opt,
                                        offload=offload)  # fmt: skip
                    key = f"bf16={bf16},distopt={dist_opt},offload={offload}"
                    results[key] = run_iterations(config, 3, str(Path(root) / key))
        config = run_config(assets, bf16=True, distributed_optimizer=True, offload=True, kl=True)
        results["kl"] = run_iterations(config, 3, str(Path(root) / "kl"))
        results["copied_moves"] = moves["copied"]
        results["random_inits_under_a_checkpoint"] = len(initialised)
        # the counter itself works: a run without a checkpoint initialises every weight
        config = run_config(assets, bf16=False, distributed_optimizer=False, offload=False)
        config = config.model_copy(update={"actor": config.actor.model_copy(update={"load": None})})
        run_iterations(config, 1, str(Path(root) / "init"))
        results["random_inits_without_a_checkpoint"] = len(initialised)
    return results
