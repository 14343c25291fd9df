"""Device check: the integrated worker on one accelerator, without Ray, in one short run.

    python benchmarks/device_check.py            # a ~0.5B Qwen2-shaped model, bf16, on the GPU/NPU
    python benchmarks/device_check.py --smoke    # tiny model on CPU (part of the test suite)

World size 1 (NCCL / HCCL / gloo), random weights from a config, the HF rollout engine on the
device, and one DAPO iteration (generate -> rule-free reward -> group-norm advantages -> old
log-probs -> update -> weight sync) with offload on, then the same with offload off. It prints
whether the weights changed after an offload cycle (they must), whether both runs trained the same
weights, device memory measured per phase next to the ledger's prediction, and tokens/s of
generation and of the update. docs/platform.md has the commands for a machine without network.

Where vLLM (vllm-ascend on NPU) is importable, one more DAPO iteration runs with it (offload on):
the engine sleeps, wakes its weights, receives the sync, wakes its KV cache and generates (the
calls are recorded and printed); its log-probs of the sampled tokens must equal the actor's
within a tolerance (fp32: 1e-3, bf16: 0.05 mean absolute), before the update and again after
the update's sync (a stale or mis-laid engine is off by far more). ``--engine hf`` skips it;
``--engine vllm`` runs only it (and requires vLLM).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

GIB = float(1 << 30)
# Qwen2.5-0.5B's shape (494M parameters with its 151,936-token vocabulary)
HALF_B = dict(num_layers=24, hidden_size=896, ffn_hidden_size=4864, num_attention_heads=14,
              num_query_groups=2, padded_vocab_size=151936, max_position_embeddings=4096,
              untie_embeddings_and_output_weights=False)  # fmt: skip
OFFLOAD_KEYS = ("offload_train_param", "offload_train_grad", "offload_train_optimizer")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assets(workdir: Path, smoke: bool):
    """Tokenizer and a Hugging Face config directory (no weights: the sync fills the engine)."""
    import transformers

    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
    from mindspeed_rl.models.hf_config import hf_config_dict
    from mindspeed_rl.trainer.config_entry import load_run_config

    base = load_run_config("quickstart_cpu").model
    model = base if smoke else base.model_copy(update=HALF_B)
    corpus = [f"{a} + {b} = {a + b}" for a in range(40) for b in range(40)]
    tok_dir = build_toy_tokenizer(workdir / "tokenizer", corpus, vocab_size=400)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    raw = hf_config_dict("qwen2", model, model.padded_vocab_size, dtype="bfloat16")
    raw.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=None)  # fmt: skip
    hf_dir = workdir / "hf"
    transformers.Qwen2Config(
        **{k: v for k, v in raw.items() if k != "architectures"}
    ).save_pretrained(hf_dir)
    tokenizer.save_pretrained(str(hf_dir))
    return model, hf_dir


PROMPT_TOKENS = 16


VLLM_CPU_KV_CACHE = 64 << 20
# mean |engine - actor| of the sampled tokens' log-probs: fp32 kernels agree to ~1e-5; bf16
# kernels (different GEMM and attention orders) to a few 1e-3
LOGPROB_TOLERANCE = {"fp32": 1e-3, "bf16": 0.05}


def _config(model, hf_dir: Path, offload: bool, smoke: bool, samples: int, new_tokens: int,
            engine: str = "hf"):  # fmt: skip
    from mindspeed_rl.trainer.config_entry import load_run_config

    engine_keys = [f"generate_config.engine={engine}"]
    if smoke:
        engine_keys.append("generate_config.dtype=float32")
        if engine == "vllm":  # vLLM on CPU takes its KV cache in bytes
            engine_keys.append(f"generate_config.kv_cache_memory_bytes={VLLM_CPU_KV_CACHE}")

    config = load_run_config(
        "quickstart_cpu",
        overrides=[
            f"megatron_training.tokenizer_name_or_path={hf_dir}",
            "actor_config.load=null",
            "rl_config.actor_resource.num_npus=1",
            f"megatron_training.bf16={'false' if smoke else 'true'}",
            "megatron_training.use_distributed_optimizer=true",
            "actor_config.lr=1e-4",
            *engine_keys,
            f"megatron_training.seq_length={PROMPT_TOKENS + new_tokens}",
            f"rl_config.max_prompt_length={PROMPT_TOKENS}",
            f"rl_config.n_samples_per_prompt={samples}",
            f"generate_config.max_model_len={PROMPT_TOKENS + new_tokens}",
            f"generate_config.sampling_config.max_tokens={new_tokens}",
            f"rl_config.rollout_max_tokens={new_tokens}",
            f"rl_config.overlong_buffer={new_tokens // 4}",
            *(f"generate_config.{key}={str(offload).lower()}" for key in OFFLOAD_KEYS),
        ],
    )
    return config.model_copy(update={"models": {config.actor.model: model}})


def _checksum(module: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()


def one_iteration(config, prompts: int, samples: int, new_tokens: int) -> dict:
    from megatron.core import parallel_state as ps

    from mindspeed_rl.algorithms.advantages import broadcast_to_tokens, group_norm_advantages
    from mindspeed_rl.platform.device import synchronize
    from mindspeed_rl.rollout.sampling import SamplingParams
    from mindspeed_rl.workers.actor import UpdateBatch
    from mindspeed_rl.workers.batch_plan import equal_micro_batches
    from mindspeed_rl.workers.integrated import IntegratedWorker
    from mindspeed_rl.workers.rows import to_megatron_rows

    worker = IntegratedWorker(0)
    start = time.perf_counter()
    engine_calls: list[str] = []
    with _recording_engine_calls(engine_calls):
        worker.setup(config, world_size=1, local_rank=0, master_addr="127.0.0.1",
                     master_port=_free_port(), total_optimizer_steps=1)  # fmt: skip
        setup_s = time.perf_counter() - start
        g = torch.Generator().manual_seed(0)
        prompt_ids = torch.randint(3, 390, (prompts, PROMPT_TOKENS), generator=g)
        params = SamplingParams(n=samples, max_tokens=new_tokens, temperature=1.0, seed=0)
        synchronize()
        start = time.perf_counter()
        out = worker.generate(prompt_ids.tolist(), params)
        synchronize()
        gen_s = time.perf_counter() - start
        generated = int(out.response_mask.sum())
        # a reward the policy can move: the share of even token ids in the response
        even = ((out.responses % 2 == 0) & out.response_mask.bool()).sum(-1)
        scores = even.float() / out.response_mask.sum(-1).clamp(min=1)
        uids = [i // samples for i in range(len(scores))]
        advantages = broadcast_to_tokens(group_norm_advantages(scores, uids), out.response_mask)
        row_prompts = prompt_ids.repeat_interleave(samples, dim=0)
        rows = to_megatron_rows(row_prompts, torch.ones_like(row_prompts), out.responses,
                                out.response_mask, worker.pad_token_id)  # fmt: skip
        micro = min(4, len(scores))
        old = worker.compute_log_prob(rows, micro)
        engine_vs_actor = _mean_abs(out.rollout_log_probs, old, out.response_mask)
        before = _checksum(worker.actor.module)  # log-prob phase: the params are resident
        batch = UpdateBatch(rows, out.response_mask, advantages, old)
        synchronize()
        start = time.perf_counter()
        metrics = worker.update(batch, equal_micro_batches(len(batch), 1, micro), epochs=1)
        synchronize()
        update_s = time.perf_counter() - start
        after = _checksum(worker.actor.module)
        engine_calls.append("-- update --")
        worker.sync_weights()
        again = worker.generate(prompt_ids.tolist(), params)  # the synced weights generate
    # read while the engine is awake (asleep, the HF engine's storage is released)
    engine = _checksum(worker.engine.model) if hasattr(worker.engine, "model") else None
    rows = to_megatron_rows(row_prompts, torch.ones_like(row_prompts), again.responses,
                            again.response_mask, worker.pad_token_id)  # fmt: skip
    synced_vs_actor = _mean_abs(
        again.rollout_log_probs, worker.compute_log_prob(rows, micro), again.response_mask
    )
    ledger = worker.memory_ledger()
    ps.destroy_model_parallel()
    del worker
    return {
        "setup_s": setup_s,
        "generate_tokens_per_s": generated / gen_s,
        "update_tokens_per_s": float(rows.tokens.numel()) / update_s,
        "weights_changed": bool((after != before).any()),
        "changed_params": int((after != before).sum()),
        "params": len(after),
        "after": after,
        "engine": engine,
        "ledger": ledger,
        "pg_loss": metrics.get("actor/pg_loss"),
        "engine_calls": engine_calls,
        "logprob_mean_abs_diff": engine_vs_actor,
        "logprob_mean_abs_diff_after_sync": synced_vs_actor,
    }


def _mean_abs(engine: torch.Tensor, actor: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |engine - actor| over the response tokens (the engine's log-probs of the tokens it
    sampled, the actor's of the same tokens)."""
    keep = mask.bool()
    return float((engine.float().cpu() - actor.float().cpu()).abs()[keep].mean())


@contextlib.contextmanager
def _recording_engine_calls(calls: list[str]):
    """Records the rollout engines' sleep / wake_up / load_weights / generate, in order."""
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine

    classes = [HFRolloutEngine]
    try:
        from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine

        classes.append(VLLMRolloutEngine)
    except ImportError:  # the module imports vllm lazily; this never fails in practice
        pass
    saved = []
    for cls in classes:
        for name in ("sleep", "wake_up", "load_weights", "load_weight_blocks", "generate"):
            method = cls.__dict__.get(name)
            if method is None:
                continue

            def recorded(self, *args, _method=method, _name=name, **kwargs):
                tags = args[0] if _name == "wake_up" and args else kwargs.get("tags")
                calls.append(f"{_name}({tags})" if _name == "wake_up" else _name)
                return _method(self, *args, **kwargs)

            saved.append((cls, name, method))
            setattr(cls, name, recorded)
    try:
        yield
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)


def _phase_table(result: dict, predicted: dict[str, dict[str, float]]) -> list[str]:
    # predicted: the --dry-run ledger; its HF-engine KV cache is for max_num_seqs x max_model_len
    lines = [f"{'phase':<12}{'allocated GiB':>15}{'tensors GiB':>13}{'predicted GiB':>15}"]
    last = {entry["phase"]: entry for entry in result["ledger"]}  # after the phase's work
    for phase, entry in last.items():
        tensors = sum(v for v in entry["resident"].values() if v) / GIB
        allocated = entry["device_allocated"]
        allocated_s = f"{allocated / GIB:.3f}" if allocated is not None else "n/a (cpu)"
        guess = predicted.get(phase)
        guess_s = f"{sum(guess.values()) / GIB:.3f}" if guess else "-"
        lines.append(f"{phase:<12}{allocated_s:>15}{tensors:>13.3f}{guess_s:>15}")
    return lines


def _print_run(name: str, result: dict, config) -> dict:
    from mindspeed_rl.workers.memory_plan import phase_ledger

    print(f"--- {name}: setup {result['setup_s']:.1f} s, generation "
          f"{result['generate_tokens_per_s']:.0f} tok/s, update "
          f"{result['update_tokens_per_s']:.0f} tok/s, pg_loss {result['pg_loss']}")  # fmt: skip
    print(f"weights changed by the update: {result['weights_changed']} "
          f"({result['changed_params']}/{result['params']} tensors)")  # fmt: skip
    print(f"engine vs actor log-probs (mean abs): {result['logprob_mean_abs_diff']:.2e}, after "
          f"the update's sync {result['logprob_mean_abs_diff_after_sync']:.2e}")  # fmt: skip
    print("engine calls: " + ", ".join(result["engine_calls"]))
    print("\n".join(_phase_table(result, phase_ledger(config))))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="write device_check.json")
    parser.add_argument("--engine", choices=("auto", "hf", "vllm"), default="auto",
                        help="auto: the hf runs, and the vLLM run where vllm is importable; "
                        "vllm: the vLLM run only")  # fmt: skip
    args = parser.parse_args(argv)
    with_vllm = args.engine == "vllm" or (
        args.engine == "auto" and importlib.util.find_spec("vllm") is not None
    )
    if args.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        print("device_check: --engine vllm but vllm is not importable", file=sys.stderr)
        return 2
    if args.smoke:
        os.environ.setdefault("MINDSPEED_RL_DEVICE", "cpu")
    import logging

    logging.basicConfig(level=logging.WARNING)
    from mindspeed_rl.platform.device import device_type

    kind = device_type()
    if kind == "cpu" and not args.smoke:
        print("device_check: no accelerator here; use --smoke for the CPU mode", file=sys.stderr)
        return 2
    sizes = (4, 2, 8) if args.smoke else (32, 4, 128)
    print(f"device: {kind}" + (f" ({torch.cuda.get_device_name()})" if kind == "cuda" else ""))
    report: dict = {"device": kind, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model, hf_dir = _assets(Path(tmp), args.smoke)
        for offload in (True, False) if args.engine != "vllm" else ():
            config = _config(model, hf_dir, offload, args.smoke, sizes[1], sizes[2])
            name = "offload on" if offload else "offload off"
            report["runs"][name] = _print_run(name, one_iteration(config, *sizes), config)
        if with_vllm:
            config = _config(model, hf_dir, True, args.smoke, sizes[1], sizes[2], engine="vllm")
            report["runs"]["vllm"] = _print_run("vllm (offload on)", one_iteration(config, *sizes),
                                                config)  # fmt: skip
    same = engine_same = None
    if "offload on" in report["runs"]:
        on, off = report["runs"]["offload on"], report["runs"]["offload off"]
        same = bool(torch.equal(on["after"], off["after"]))
        engine_same = bool(torch.equal(on["engine"], off["engine"]))
        print(f"offload on vs off: actor weights equal {same}, engine weights equal {engine_same}")
    tolerance = LOGPROB_TOLERANCE["fp32" if args.smoke else "bf16"]
    ok = all(run["weights_changed"] for run in report["runs"].values()) and all(
        run["logprob_mean_abs_diff"] < tolerance
        and run["logprob_mean_abs_diff_after_sync"] < tolerance
        for run in report["runs"].values()
    )
    if not ok:
        print(f"log-probs engine vs actor must stay below {tolerance} (mean absolute)")
    print("RESULT:", "ok" if ok else "FAILED")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for run in report["runs"].values():
            run["after"] = run["after"].tolist()
            run["engine"] = run["engine"].tolist() if run["engine"] is not None else None
        report["equal_actor"], report["equal_engine"] = same, engine_same
        (Path(args.out) / "device_check.json").write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
