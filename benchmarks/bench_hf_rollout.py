"""HF rollout engine throughput next to transformers' own ``generate`` on the same model and prompts.

    python benchmarks/bench_hf_rollout.py [--prompts 64] [--new-tokens 128]

Both decode greedily with a KV cache, never stop early (no EOS: every row produces exactly
``--new-tokens`` tokens), in fp32 on this machine's CPU threads. Goal: our overhead <= 5%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindspeed_rl.rollout.hf_engine import HFRolloutEngine  # noqa: E402
from mindspeed_rl.rollout.sampling import SamplingParams  # noqa: E402


def tiny_model(vocab: int) -> torch.nn.Module:
    config = transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vocab = 1000
    model = tiny_model(vocab)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(16, 48, (args.prompts,), generator=g).tolist()
    prompts = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]
    never = vocab + 7  # an EOS id the model cannot produce
    engine = HFRolloutEngine(
        model, eos_token_ids=[never], pad_token_id=0, max_num_seqs=args.prompts
    )
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens)

    width = max(lengths)
    ids = torch.zeros((args.prompts, width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1

    def ours() -> int:
        return int(engine.generate(prompts, params).response_lengths.sum())

    def reference() -> int:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens, pad_token_id=0, eos_token_id=None,
            )  # fmt: skip
        return int((out.shape[1] - width) * args.prompts)

    results = {}
    for name, fn in (("transformers generate", reference), ("mindspeed_rl hf engine", ours)):
        fn()  # warm-up
        times, tokens = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            tokens = fn()
            times.append(time.perf_counter() - start)
        results[name] = tokens / statistics.median(times)
        print(f"{name:24s} {tokens} tokens, median {statistics.median(times):.3f} s, "
              f"{results[name]:.0f} tokens/s")  # fmt: skip
    overhead = results["transformers generate"] / results["mindspeed_rl hf engine"] - 1
    print(f"overhead of our engine vs transformers generate: {overhead * 100:+.1f}% (goal <= 5%)")


if __name__ == "__main__":
    main()
