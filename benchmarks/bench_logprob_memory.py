"""Memory and time of log-probs + policy loss + backward from one rank's vocab slice: the path
before issue 16 against the response-only, chunk-recomputing one. CPU, one run.

    python benchmarks/bench_logprob_memory.py [--tokens 16384] [--vocab-slice 19008]

A micro-batch of 16 rows of ``tokens / 16`` tokens each (a quarter prompt, three quarters
response), logits ``[16, L, V/TP]`` in bf16 as the output layer gives them (V/TP = 152064 / 8, a
Qwen2.5 vocabulary at TP 8), DAPO's loss (``algorithms/policy_loss.py``) with the entropy as a
metric (``entropy_coeff: 0``, every shipped recipe) and, for the new path, also in the loss:

- ``before``: every position through the vocab-parallel log-softmax (megatron-core's
  ``vocab_parallel_cross_entropy`` plus the entropy's autograd graph, in 4096-token chunks, as
  ``workers/logprobs.py`` did), response positions picked afterwards;
- ``after``: only the response positions gathered, ``_VocabParallelLogProbs`` (chunked forward,
  chunks recomputed in backward, entropy without a graph);
- ``after_entropy_grad``: the same with a differentiable entropy (``entropy_coeff != 0``).

Each mode runs in a fresh child process. *Saved*: bytes autograd holds for backward at the end of
the forward (exact, ``saved_tensors_hooks``, storages counted once). *Peak*: the rise of the
resident high-water mark over forward + backward (the logits are allocated before; their
gradient, 1x the logits, is part of the rise). *Time*: forward + backward wall clock.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = 16
MIB = 1024**2
MODES = ("before", "after", "after_entropy_grad")


def _high_water_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def _before(logits, rows, temperature):
    """The log-prob path before issue 16 (all positions, megatron's cross entropy), verbatim."""
    import torch
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

    def entropy_of(scaled):
        local_max = scaled.detach().max(dim=-1, keepdim=True).values
        shifted = scaled - local_max
        exp = shifted.exp()
        sum_exp = reduce_from_tensor_model_parallel_region(exp.sum(dim=-1))
        sum_exp_shifted = reduce_from_tensor_model_parallel_region((exp * shifted).sum(dim=-1))
        return torch.log(sum_exp) - sum_exp_shifted / sum_exp

    batch, seq, vocab = logits[:, :-1].shape
    flat = logits[:, :-1].reshape(batch * seq, vocab)
    labels = rows.tokens[:, 1:].reshape(-1)
    lps, ents = [], []
    for start in range(0, batch * seq, 4096):
        scaled = flat[start : start + 4096].float() / temperature
        ents.append(entropy_of(scaled))
        lps.append(-vocab_parallel_cross_entropy(scaled.clone(), labels[start : start + 4096]))
    lp = torch.cat(lps).reshape(batch, seq)
    ent = torch.cat(ents).reshape(batch, seq)
    return rows.response_values(lp), rows.response_values(ent)


def _measure(mode: str, tokens: int, vocab_slice: int, port: int, queue) -> None:
    import os

    import torch

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.set_num_threads(2)
    from mindspeed_rl.algorithms.policy_loss import policy_loss
    from mindspeed_rl.platform.distributed import init_distributed
    from mindspeed_rl.workers.forward_pass import response_log_probs
    from mindspeed_rl.workers.rows import MegatronRows

    init_distributed(master_port=port)
    length = tokens // ROWS
    prompt = length // 4
    g = torch.Generator().manual_seed(0)
    rows = MegatronRows(
        tokens=torch.randint(0, vocab_slice, (ROWS, length), generator=g),
        response_start=torch.full((ROWS,), prompt),
        response_width=length - prompt,
        lengths=torch.full((ROWS,), length),
    )
    logits = (torch.randn(ROWS, length, vocab_slice, generator=g) * 2).bfloat16()
    logits.requires_grad_(True)
    width = length - prompt
    advantages = torch.randn(ROWS, width, generator=g)
    mask = torch.ones(ROWS, width)
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    Path("/proc/self/clear_refs").write_text("5")
    before = _high_water_bytes()
    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        if mode == "before":
            lp, entropy = _before(logits, rows, 0.7)
            entropy = entropy.detach()
        else:
            lp, entropy = response_log_probs(
                logits, rows, 0.7, with_entropy=True, entropy_grad=mode == "after_entropy_grad"
            )
        coeff = 0.01 if mode == "after_entropy_grad" else 0.0
        out = policy_loss(
            lp, lp.detach(), advantages, mask, loss_agg_mode="token-mean",
            global_denominator=mask.sum(), global_tokens=mask.sum(), clip_ratio_low=0.2,
            clip_ratio_high=0.28, entropy=entropy, entropy_coeff=coeff,
        )  # fmt: skip
    saved_bytes = sum(saved.values())
    out.loss.backward()
    elapsed = time.perf_counter() - started
    queue.put((_high_water_bytes() - before, saved_bytes, elapsed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--vocab-slice", type=int, default=152064 // 8)
    args = parser.parse_args()
    from tests.distributed_harness import free_port

    context = multiprocessing.get_context("spawn")
    print(
        f"{args.tokens} tokens ({ROWS} rows, 3/4 response), V/TP = {args.vocab_slice}, bf16 logits"
    )
    print(f"{'mode':<20} {'saved MiB':>10} {'peak MiB':>10} {'time s':>8}")
    for mode in MODES:
        queue = context.Queue()
        child = context.Process(
            target=_measure, args=(mode, args.tokens, args.vocab_slice, free_port(), queue)
        )
        child.start()
        peak, saved, elapsed = queue.get()
        child.join()
        print(f"{mode:<20} {saved / MIB:>10.0f} {peak / MIB:>10.0f} {elapsed:>8.1f}")


if __name__ == "__main__":
    main()
