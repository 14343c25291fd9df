"""Padded vs packed vs packed + token-budget micro-batches on the quickstart's chain-of-thought
task. CPU, one run.

    python benchmarks/bench_packing.py [--mix task|long] [--rows 64] [--repeats 2] [--seed 0]

The batch: ``--rows`` problems of the quickstart's task (``mindspeed_rl.quickstart.math_task``),
each prompt as the chat template renders it and each response the reference step-by-step solution
(+ eos), tokenized by the quickstart's toy tokenizer (numbers kept merged here): prompts of about 30
tokens, responses with the task's long tail, the length mix the e2e tests and the demo train on
(``--mix long``: DAPO's long responses scaled down for a CPU, ``_long_mix``). One
mini-batch through the real actor (``MegatronActor.backward_mini_batch``: a 2-layer GPTModel,
hidden 128, fp32, the project's CPU attention), each mode in a fresh child process:

- ``padded``: micro-batches of 4 rows, every row padded to the batch's longest (the baseline,
  what the project ran before ``use_remove_padding``);
- ``packed``: the same micro-batches, rows end to end (``use_remove_padding``);
- ``packed+dynamic``: micro-batches by a token budget of twice the longest row, balanced
  (``use_dynamic_bsz``, Karmarkar-Karp).

Columns: real / computed tokens (``batch/real_token_share``), micro-batches, tokens per
micro-batch, the step's time (best of ``--repeats``) and its peak memory (the rise of the
process's resident high-water mark, ``/proc/self/clear_refs`` reset before the step).
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MICRO_ROWS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _high_water_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def _task_mix(rows: int, seed: int = 0):
    """Prompts left-padded, reference responses right-padded (the batch contract), token ids of the
    quickstart's tokenizer; the advantages are random (the step's cost does not depend on them)."""
    import tempfile

    import torch
    import transformers

    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
    from mindspeed_rl.quickstart import math_task

    task = math_task.make_problems(2400, seed=0)  # the quickstart's problems and tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        path = build_toy_tokenizer(tmp, math_task.corpus(task[:500]), vocab_size=400)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    picked = math_task.make_problems(rows, seed=seed + 1)
    prompt_ids = [
        tokenizer.apply_chat_template([{"role": "user", "content": p.question}],
                                      add_generation_prompt=True, tokenize=True, return_dict=False)
        for p in picked
    ]  # fmt: skip
    response_ids = [
        tokenizer.encode(p.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
        for p in picked
    ]
    width_p = max(map(len, prompt_ids))
    width_r = max(map(len, response_ids))
    prompts = torch.zeros(rows, width_p, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompts)
    responses = torch.zeros(rows, width_r, dtype=torch.long)
    response_mask = torch.zeros_like(responses)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        prompts[i, width_p - len(p) :] = torch.tensor(p)
        prompt_mask[i, width_p - len(p) :] = 1
        responses[i, : len(r)] = torch.tensor(r)
        response_mask[i, : len(r)] = 1
    g = torch.Generator().manual_seed(seed)
    advantages = torch.randn(rows, 1, generator=g).expand(rows, width_r).contiguous()
    return prompts, prompt_mask, responses, response_mask, advantages


def _long_mix(rows: int, seed: int = 0):
    """``--mix long``: prompts of 32-128 tokens, responses log-normal (median 300, sigma 0.9, cut
    at 1536): DAPO's 1.5k-20k-token responses scaled down ~13x."""
    import torch

    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(32, 129, (rows,), generator=g)
    response_len = (torch.randn(rows, generator=g) * 0.9 + torch.log(torch.tensor(300.0))).exp()
    response_len = response_len.long().clamp(16, 1536)
    width_p, width_r = int(prompt_len.max()), int(response_len.max())
    prompt_mask = (torch.arange(width_p) >= width_p - prompt_len[:, None]).long()
    response_mask = (torch.arange(width_r) < response_len[:, None]).long()
    prompts = torch.randint(1, 512, (rows, width_p), generator=g) * prompt_mask
    responses = torch.randint(1, 512, (rows, width_r), generator=g) * response_mask
    advantages = torch.randn(rows, 1, generator=g).expand(rows, width_r).contiguous()
    return prompts, prompt_mask, responses, response_mask, advantages


def _measure(mode: str, mix: str, rows: int, repeats: int, seed: int, port: int, queue) -> None:
    import os

    import torch

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.set_num_threads(1)
    from mindspeed_rl.config.schema import MegatronConfig, ModelConfig, RLConfig
    from mindspeed_rl.platform.distributed import ParallelLayout, init_distributed
    from mindspeed_rl.workers.actor import MegatronActor, UpdateBatch
    from mindspeed_rl.workers.batch_plan import (
        MicroBatching,
        data_parallel_shares,
        plan_batch,
        plan_metrics,
    )
    from mindspeed_rl.workers.rows import to_megatron_rows

    init_distributed(master_port=port)
    prompts, prompt_mask, responses, response_mask, advantages = MIXES[mix](rows, seed)
    megatron_rows = to_megatron_rows(prompts, prompt_mask, responses, response_mask, 0)
    lengths = megatron_rows.lengths
    longest = int(lengths.max())
    model = ModelConfig(
        num_layers=2, hidden_size=128, ffn_hidden_size=256, num_attention_heads=2,
        max_position_embeddings=2048, padded_vocab_size=512,
    )  # fmt: skip
    rl = RLConfig(
        actor_resource={"num_npus": 1}, n_samples_per_prompt=2, max_prompt_length=128,
        mini_batch_size=rows // 2, use_remove_padding=mode != "padded",
        use_dynamic_bsz=mode == "packed+dynamic",
    )  # fmt: skip
    actor_cfg = MegatronConfig(
        model="bench", global_batch_size=rows // 2, seq_length=2048, train_iters=1, lr=1e-4
    )
    actor = MegatronActor(model, actor_cfg, rl, ParallelLayout(), total_optimizer_steps=1)
    shares = data_parallel_shares(lengths, 1, 1, balance=False)
    micro = (
        MicroBatching(token_budget=2 * longest)
        if mode == "packed+dynamic"
        else MicroBatching(rows=MICRO_ROWS)
    )
    plan = plan_batch(lengths, shares, micro)
    metrics = plan_metrics(lengths, plan, packed=mode != "padded", padded_width=longest)
    order = plan.order[0]
    batch = UpdateBatch(megatron_rows.select(order), response_mask[order], advantages[order], None)
    sizes = plan.micro_sizes[0][0]
    best = float("inf")
    Path("/proc/self/clear_refs").write_text("5")
    before = _high_water_bytes()
    for _ in range(repeats):
        actor.zero_grad()
        start = time.perf_counter()
        actor.backward_mini_batch(batch, sizes)
        best = min(best, time.perf_counter() - start)
    peak = _high_water_bytes() - before
    queue.put(
        {
            "mode": mode,
            "real_share": metrics["batch/real_token_share"],
            "micro_batches": len(sizes),
            "tokens_per_micro": metrics["batch/tokens_per_micro_batch"],
            "seconds": best,
            "peak_mib": peak / 2**20,
            "real_tokens": int(lengths.sum()),
            "longest": longest,
        }
    )


MIXES = {"task": _task_mix, "long": _long_mix}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="which rows make the batch")
    parser.add_argument("--mix", choices=sorted(MIXES), default="task", help="the length mix")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    results = []
    for mode in ("padded", "packed", "packed+dynamic"):
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_measure,
            args=(mode, args.mix, args.rows, args.repeats, args.seed, _free_port(), queue),
        )
        proc.start()
        results.append(queue.get())
        proc.join()
    first = results[0]
    print(f"{args.rows} rows, {first['real_tokens']} real tokens, longest row {first['longest']}")
    print(f"{'mode':<16}{'real/computed':>14}{'micro':>7}{'tok/micro':>11}{'step s':>9}"
          f"{'vs padded':>10}{'peak MiB':>10}")  # fmt: skip
    for r in results:
        print(
            f"{r['mode']:<16}{r['real_share']:>14.3f}{r['micro_batches']:>7}"
            f"{r['tokens_per_micro']:>11.0f}{r['seconds']:>9.2f}"
            f"{first['seconds'] / r['seconds']:>9.2f}x{r['peak_mib']:>10.0f}"
        )


if __name__ == "__main__":
    main()
