"""mindspeed-rl DAPO vs TRL's GRPOTrainer (``loss_type="dapo"``) on the same CPU work, in one run.

    python benchmarks/bench_vs_trl.py [--iterations 30] [--workdir DIR] [--trl-venv .venv-trl]

The same task for both: the quickstart's addition problems in the DAPO-Math-17k schema, the same
tiny Qwen2 model warm-started by SFT (built once, by the quickstart pipeline), the same train and
held-out prompts, 16 prompts x 8 samples per iteration, 16 new tokens, one optimizer step per
iteration, constant LR 1e-3, clip 0.2 / 0.28, token-level loss, no KL, the same score
(``acc_for_dapo`` plus soft overlong punishment over the last 4 tokens). Each side is one whole
process, timed from launch to exit: ``cli/train_dapo.py`` (Ray, one CPU worker, TP 1, HF rollout,
dynamic sampling on: that is DAPO) and TRL in its own virtualenv (created here on first use,
torch pinned to the CPU wheel).

Measures, both sides:
* whole-process seconds at equal iterations (goal: ours <= 0.7x TRL's), ours once per
  ``--gen-prompts`` (prompts per generation round: more than the train batch makes dynamic
  sampling's extra rounds one batched call, as verl's ``gen_batch_size``);
* held-out accuracy (one answer per prompt, greedy by default: ``--eval-temperature``) every
  ``--eval-every`` iterations, and the seconds from launch to reach TRL's final accuracy,
  evaluation time left out (goal: ours < TRL's); greedy answers make both sides' iteration-0
  accuracies equal (the same model), which the benchmark checks;
* our per-phase seconds per iteration (``timing/*`` medians) and start-up (launch to the first
  validation).
"""

from __future__ import annotations

import argparse
import importlib.metadata
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

PINS = ("transformers", "tokenizers")  # the same versions as ours on both sides
TRL = "trl==1.16.0"
CPU_TORCH = "torch==2.13.0"


def ensure_trl_venv(venv: Path) -> float:
    """Create TRL's virtualenv if missing; returns the seconds it took (0 when it existed)."""
    python = venv / "bin" / "python"
    if python.exists():
        return 0.0
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, CPU_TORCH], check=True)  # first and pinned: never a CUDA build
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in PINS]
    subprocess.run([*pip, TRL, CPU_TORCH, *pins], check=True)
    return time.perf_counter() - start


def prompts_as_text(dataset, tokenizer) -> tuple[list[str], list[str], int]:
    """The dataset's prompts as the text TRL tokenizes, their labels, and how many do not
    tokenize back to the same ids (TRL sees other tokens than we do for those)."""
    batch = dataset.batch(list(range(len(dataset))))
    texts = [tokenizer.decode(list(map(int, ids))) for ids in batch.prompt_ids]
    again = tokenizer(texts)["input_ids"]
    mismatched = sum(list(a) != list(map(int, b)) for a, b in zip(again, batch.prompt_ids))
    return texts, batch.texts("labels"), mismatched


def run_ours(args, paths: dict, workdir: Path, gen_prompts: int) -> dict:
    log_dir = workdir / f"ours_logs_gen{gen_prompts}"
    shutil.rmtree(log_dir, ignore_errors=True)  # metrics.jsonl is appended to, as on a resume
    overrides = [
        f"megatron_training.tokenizer_name_or_path={paths['hf']}",
        f"megatron_training.data_path={paths['data']}",
        f"actor_config.load={paths['mcore']}",
        f"megatron_training.train_iters={args.iterations}",
        f"megatron_training.global_batch_size={gen_prompts}",
        f"rl_config.filter_groups_train_batch_size={args.prompts}",
        f"rl_config.mini_batch_size={args.prompts}",
        f"rl_config.n_samples_per_prompt={args.samples}",
        f"rl_config.rollout_max_tokens={args.new_tokens}",
        f"generate_config.sampling_config.max_tokens={args.new_tokens}",
        "rl_config.overlong_buffer=4",
        "rl_config.actor_resource.num_npus=1",
        f"actor_config.micro_batch_size={args.prompts * args.samples}",
        "rl_config.validate_before_train=true",
        f"rl_config.validation_interval={args.eval_every}",
        f"rl_config.validation_temperature={args.eval_temperature}",
    ]
    command = [sys.executable, str(ROOT / "cli" / "train_dapo.py"), "--config-name",
               "quickstart_cpu", "--log-dir", str(log_dir), *overrides]  # fmt: skip
    start = time.time()
    done = subprocess.run(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)  # fmt: skip
    end = time.time()
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    ready = [line for line in done.stderr.splitlines() if "workers ready in" in line]
    lines = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]
    evals = evaluations(lines)
    iterations = [x for x in lines if "timing/total" in x]
    phases = sorted({k for x in iterations for k in x if k.startswith("timing/")} - {
        "timing/validate", "timing/orchestration_share"})  # fmt: skip
    per_phase = {k: statistics.median(x.get(k, 0.0) for x in iterations[2:]) for k in phases}
    rounds = statistics.mean(x["dynamic_sampling/num_gen_batches"] for x in iterations)
    return {"start": start, "end": end, "evals": evals, "per_phase": per_phase,
            "rounds": rounds, "ready_line": ready[0].split(": ", 1)[-1] if ready else "?",
            "start_up": evals[0]["time"] - start - evals[0]["eval_seconds_so_far"]}  # fmt: skip


def run_trl(args, paths: dict, workdir: Path, data: dict) -> dict:
    spec = {
        "hf": str(paths["hf"]), "output_dir": str(workdir / "trl_out"), "seed": 1234,
        "threads": args.threads, "iterations": args.iterations, "prompts": args.prompts,
        "samples": args.samples, "max_new_tokens": args.new_tokens, "overlong_buffer": 4,
        "eval_every": args.eval_every, "eval_temperature": args.eval_temperature,
        **data,
    }  # fmt: skip
    spec_path, result_path = workdir / "trl_spec.json", workdir / "trl_result.json"
    spec_path.write_text(json.dumps(spec))
    python = Path(args.trl_venv).resolve() / "bin" / "python"
    script = ROOT / "benchmarks" / "trl_side" / "grpo_addition.py"
    start = time.time()
    subprocess.run([str(python), str(script), str(spec_path), str(result_path)], check=True,
                   cwd=workdir, stdout=subprocess.DEVNULL)  # fmt: skip
    end = time.time()
    result = json.loads(result_path.read_text())
    return {"start": start, "end": end, "evals": result["evals"]}


def evaluations(lines: list[dict]) -> list[dict]:
    """The held-out evaluations of a run's metrics lines, each with the evaluation seconds spent
    so far (time-to-accuracy leaves them out)."""
    evals, eval_seconds = [], 0.0
    for line in lines:
        if "val/acc" in line:
            eval_seconds += line["timing/validate"]
            evals.append({"step": line["iteration"], "acc": line["val/acc"],
                          "time": line["time"], "eval_seconds_so_far": eval_seconds})  # fmt: skip
    return evals


def seconds_to_reach(run: dict, target: float) -> float | None:
    """Launch to the first evaluation at >= target accuracy, evaluation time left out."""
    for e in run["evals"]:
        if e["acc"] >= target:
            return e["time"] - run["start"] - e["eval_seconds_so_far"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument(
        "--gen-prompts", type=int, nargs="+", default=None,
        help="prompts per generation round of our runs (global_batch_size; the train batch stays "
        "--prompts, surplus kept groups are dropped): one run each; default --prompts and 2x",
    )  # fmt: skip
    parser.add_argument(
        "--eval-temperature", type=float, default=0.0,
        help="temperature of the held-out evaluation on both sides; 0 (default): greedy, so the "
        "two sides' iteration-0 accuracies must agree, and sampling noise does not move the "
        "target",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--trl-venv", default=str(ROOT / ".venv-trl"))
    args = parser.parse_args()
    args.gen_prompts = args.gen_prompts or [args.prompts, 2 * args.prompts]

    import transformers

    from mindspeed_rl.data.prompt_dataset import PromptDataset
    from mindspeed_rl.quickstart.pipeline import CONFIG_NAME, prepare_assets
    from mindspeed_rl.trainer.config_entry import load_run_config

    venv_seconds = ensure_trl_venv(Path(args.trl_venv))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        base = load_run_config(CONFIG_NAME)
        # 4800 problems: 480 held out (split 90,10,0), so that accuracy moves beyond sampling noise
        paths = prepare_assets(workdir, base.model, problems=4800, warm_steps=400, seed=0)
        tokenizer = transformers.AutoTokenizer.from_pretrained(paths["hf"])
        split = base.actor.split
        data, mismatched = {}, 0
        for part, name in (("train", "train"), ("valid", "valid")):
            dataset = PromptDataset(paths["data"], split, part, ["labels"], tokenizer)
            texts, labels, bad = prompts_as_text(dataset, tokenizer)
            data[f"{name}_prompts"], data[f"{name}_labels"] = texts, labels
            mismatched += bad
        # the same constant learning rate as our side (configs/quickstart_cpu.yaml)
        trl = run_trl(args, paths, workdir, {**data, "lr": base.actor.lr})
        runs = {f"ours gen {g}": run_ours(args, paths, workdir, g) for g in args.gen_prompts}

    trl_total = trl["end"] - trl["start"]
    target = trl["evals"][-1]["acc"]
    if venv_seconds:
        print(f"TRL virtualenv created in {venv_seconds:.0f} s")
    print(f"task: {len(data['train_prompts'])} train / {len(data['valid_prompts'])} held-out "
          f"prompts ({mismatched} not re-tokenized identically by TRL), {args.iterations} "
          f"iterations of {args.prompts} x {args.samples}, {args.new_tokens} new tokens")  # fmt: skip
    trl_train = trl_total - trl["evals"][-1]["eval_seconds_so_far"]
    print(f"whole process: TRL {trl_total:.1f} s ({trl_train:.1f} s without its evaluations)")
    for name, run in runs.items():
        total = run["end"] - run["start"]
        train = total - run["evals"][-1]["eval_seconds_so_far"]
        print(f"whole process: {name} {total:.1f} s -> {total / trl_total:.2f}x TRL "
              f"(goal <= 0.70x); without evaluations {train:.1f} s -> "
              f"{train / trl_train:.2f}x")  # fmt: skip
    decoding = "greedy" if args.eval_temperature == 0 else f"temperature {args.eval_temperature}"
    for name, run in {**runs, "TRL": trl}.items():
        curve = " ".join(f"{e['step']}:{e['acc']:.3f}" for e in run["evals"])
        print(f"held-out accuracy ({decoding}) {name:10s} {curve}")
    if args.eval_temperature == 0:
        firsts = {name: run["evals"][0]["acc"] for name, run in {**runs, "TRL": trl}.items()}
        agree = max(firsts.values()) - min(firsts.values()) <= 2 / len(data["valid_prompts"])
        print(f"iteration-0 greedy accuracy agrees across sides (same model): {agree} {firsts}")
    print(
        f"time to TRL's final accuracy {target:.3f} (launch to the first evaluation at or "
        "above it, evaluation time left out):"
    )
    for name, run in {**runs, "TRL": trl}.items():
        reached = seconds_to_reach(run, target)
        print(f"  {name:10s} {f'{reached:.1f} s' if reached is not None else 'not reached'}")
    for name, run in runs.items():
        print(f"{name}: start-up (launch to the first validation) {run['start_up']:.1f} s, "
              f"{run['rounds']:.2f} generation rounds per iteration")  # fmt: skip
        print(f"  {run['ready_line']}")
        for key, value in run["per_phase"].items():
            print(f"  {key:22s} {value:.3f} s / iteration (median)")


if __name__ == "__main__":
    main()
