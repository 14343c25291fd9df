"""Training memory per token vs sequence length: megatron-core's local attention against the
project's SDPA attention, and what activation recompute saves. CPU, tiny model, one run.

    python benchmarks/bench_activation_memory.py [--lengths 512 1024 2048 4096 8192]

Each measurement is one forward + backward of a ``[1, L]`` micro-batch through a 2-layer GPTModel
(hidden 128, 2 heads, fp32, the loss is Megatron's vocab-parallel cross-entropy) in a fresh
child process, so that no allocator state carries over:

- ``megatron_local``: megatron-core's local spec (``DotProductAttention``: fp32 ``[b, h, L, L]``
  scores and probabilities, plus the dense ``[B, 1, L, L]`` causal mask the caller builds), the
  baseline, as this project ran before the backend seam;
- ``project``: the CPU backend (``models/sdpa_attention.py``: ``scaled_dot_product_attention``,
  causal flag, no mask);
- ``project`` with and without full recompute (uniform, 1 layer) at the longest length, with 8
  layers (what recompute saves grows with depth; the transient peak of one layer does not).

Two numbers per run, both divided by the L tokens: *peak*, the rise of the process's resident
high-water mark over the step (``/proc/self/clear_refs`` resets it before the step; includes
allocator slack and transient buffers), and *saved*, the bytes autograd holds for backward at the end
of the forward (exact, from ``saved_tensors_hooks``; the tiny model's parameters are among them). Linear memory means a flat per-token column; the local attention's
grows with L (quadratic total).
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECOMPUTE_LAYERS = 8
RECOMPUTE = {"recompute_granularity": "full", "recompute_method": "uniform",
             "recompute_num_layers": 1}  # fmt: skip


def _high_water_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def _measure(backend: str, length: int, layers: int, recompute: bool, port: int, queue) -> None:
    import os

    import torch

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.set_num_threads(1)
    from mindspeed_rl.config.schema import ModelConfig
    from mindspeed_rl.models import layer_specs
    from mindspeed_rl.models.gpt_builder import build_gpt_model
    from mindspeed_rl.platform.distributed import init_distributed

    init_distributed(master_port=port)
    model = ModelConfig(
        num_layers=layers, hidden_size=128, ffn_hidden_size=256, num_attention_heads=2,
        max_position_embeddings=length, padded_vocab_size=512,
    )  # fmt: skip
    gpt = build_gpt_model(model, backend=backend, **(RECOMPUTE if recompute else {}))
    gpt.train()
    tokens = torch.randint(0, 512, (1, length), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(length).unsqueeze(0)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    Path("/proc/self/clear_refs").write_text("5")
    before = _high_water_bytes()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        # the baseline's caller builds the dense mask per micro-batch; the project needs none
        mask = None
        if layer_specs.needs_host_mask(backend):
            mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
            mask = mask.expand(1, 1, length, length)
        loss = gpt(tokens, positions, mask, labels=tokens).float().mean()
    held = sum(saved.values())  # at the end of the forward; recompute saves again in backward
    loss.backward()
    queue.put((_high_water_bytes() - before, held))


def measure(
    backend: str, length: int, layers: int = 2, recompute: bool = False
) -> tuple[float, float]:
    """(peak, saved) bytes per token of one training step."""
    from tests.distributed_harness import free_port

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_measure, args=(backend, length, layers, recompute, free_port(), queue)
    )
    child.start()
    peak, saved = queue.get()
    child.join()
    return peak / length, saved / length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    args = parser.parse_args()
    print(f"{'L':>6} | {'local peak':>11} {'local saved':>12} | {'SDPA peak':>10} "
          f"{'SDPA saved':>11} | KiB per token")  # fmt: skip
    rows = {}
    for length in args.lengths:
        local, project = measure("megatron_local", length), measure("project", length)
        rows[length] = (local, project)
        print(f"{length:>6} | {local[0] / 1024:>11.1f} {local[1] / 1024:>12.1f} | "
              f"{project[0] / 1024:>10.1f} {project[1] / 1024:>11.1f} |")  # fmt: skip
    first, last = args.lengths[0], args.lengths[-1]
    for name, index in (("megatron_local", 0), ("project", 1)):
        growth = rows[last][index][1] / rows[first][index][1]
        print(f"{name}: saved bytes per token grow {growth:.2f}x from L={first} to L={last} "
              f"({last // first}x longer)")  # fmt: skip
    # recompute trades what each layer holds for backward, so it shows with depth
    plain = measure("project", last, layers=RECOMPUTE_LAYERS)
    full = measure("project", last, layers=RECOMPUTE_LAYERS, recompute=True)
    print(f"{RECOMPUTE_LAYERS} layers, full recompute (uniform, 1 layer) at L={last}: peak {full[0] / 1024:.1f} vs "
          f"{plain[0] / 1024:.1f} KiB per token, saved {full[1] / 1024:.1f} vs "
          f"{plain[1] / 1024:.1f} KiB per token ({1 - full[1] / plain[1]:.0%} less held "
          "for backward)")  # fmt: skip


if __name__ == "__main__":
    main()
