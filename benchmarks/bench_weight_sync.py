"""Weight-sync seconds (Megatron TP=2 actor -> HF rollout engine) next to a plain in-memory copy.

    python benchmarks/bench_weight_sync.py [--hidden 1024 --layers 8 --vocab 32000]

Two gloo processes on this CPU, three measures in the same processes:

* "sync" -- what the integrated worker does: the TP shards gathered through shared memory
  (``platform/host_gather.py``), each HF tensor's row blocks copied straight into the engine's
  parameters (``iter_synced_blocks`` -> ``load_weight_blocks``);
* "gloo sync" -- the baseline: gloo's all-gather over loopback TCP, whole HF tensors merged, then
  ``load_weights``;
* "copy" -- ``copy_`` of the same HF tensors into the engine's parameters, the floor any sync pays.
Goal (issue 20): sync within 3x copy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.distributed_harness import run_distributed  # noqa: E402


def _rank(rank: int, world: int, hidden: int, layers: int, vocab: int, repeats: int) -> dict:
    import transformers

    from mindspeed_rl.config.schema import MegatronConfig, RLConfig
    from mindspeed_rl.models.hf_config import model_config_from_hf
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.platform.distributed import (
        ParallelLayout,
        destroy_distributed,
        init_distributed,
    )
    from mindspeed_rl.platform.host_gather import host_gather_for
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
    from mindspeed_rl.workers.actor import MegatronActor
    from mindspeed_rl.workers.weight_sync import iter_synced_blocks, iter_synced_weights

    torch.set_num_threads(1)
    layout = ParallelLayout(tensor_model_parallel_size=world)
    init_distributed(layout, seed=0)
    try:
        hf_config = transformers.Qwen2Config(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
            num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=4,
            max_position_embeddings=1024, tie_word_embeddings=False,
        )  # fmt: skip
        info = model_config_from_hf(hf_config.to_dict(), tensor_parallel_size=world)
        rl = RLConfig(actor_resource={"num_npus": world}, n_samples_per_prompt=2,
                      max_prompt_length=8, mini_batch_size=1)  # fmt: skip
        actor_cfg = MegatronConfig(model="m", global_batch_size=1, seq_length=8, train_iters=1)
        actor = MegatronActor(info.model, actor_cfg, rl, layout, 1)
        engine = HFRolloutEngine(transformers.Qwen2ForCausalLM(hf_config), [0], 0)
        mapping = WeightMapping(info.model, vocab, layout)
        from megatron.core import parallel_state

        tp_gather = host_gather_for(parallel_state.get_tensor_model_parallel_group())
        sync, gloo, copy = [], [], []
        for version in range(repeats):
            torch.distributed.barrier()
            start = time.perf_counter()
            engine.load_weight_blocks(iter_synced_blocks(actor.module, mapping, tp_gather), version)
            sync.append(time.perf_counter() - start)
            torch.distributed.barrier()
            start = time.perf_counter()
            pairs = list(iter_synced_weights(actor.module, mapping))
            engine.load_weights(pairs, version)
            gloo.append(time.perf_counter() - start)
            params = dict(engine.model.named_parameters())
            start = time.perf_counter()
            with torch.no_grad():
                for name, tensor in pairs:
                    params[name].copy_(tensor)
            copy.append(time.perf_counter() - start)
        nbytes = sum(t.numel() * t.element_size() for _, t in pairs)
        return {
            "sync": statistics.median(sync),
            "gloo": statistics.median(gloo),
            "copy": statistics.median(copy),
            "bytes": nbytes,
            "shared_memory": tp_gather is not None,
        }
    finally:
        destroy_distributed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = run_distributed(_rank, 2, args.hidden, args.layers, args.vocab, args.repeats)
    r = results[0]
    gib = r["bytes"] / 2**30
    print(f"model bytes (fp32, HF names): {gib:.2f} GiB")
    print(f"TP gather through shared memory: {r['shared_memory']}")
    print(f"weight sync TP=2 -> HF engine: {r['sync']:.3f} s ({gib / r['sync']:.2f} GiB/s)")
    print(f"  baseline, gloo all-gather:   {r['gloo']:.3f} s ({gib / r['gloo']:.2f} GiB/s)")
    print(f"in-memory copy of the same bytes: {r['copy']:.3f} s ({gib / r['copy']:.2f} GiB/s)")
    print(f"sync / copy: {r['sync'] / r['copy']:.2f}x (goal <= 3x); "
          f"gloo sync / copy: {r['gloo'] / r['copy']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
