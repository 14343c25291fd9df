"""The CPU quickstart, end to end, through the same code a 32B run takes.

1. write the synthetic chain-of-thought task (``math_task``) as a DAPO-Math-17k parquet file;
2. train a toy byte-level BPE tokenizer on it and build the tiny Qwen2-style HF model of
   ``configs/model/tiny_qwen2.yaml``; warm-start it briefly (DAPO starts from an SFT model);
3. convert the HF checkpoint to Megatron-core shards with the real converter;
4. preprocess the parquet file with the real pipeline into Megatron indexed datasets;
5. run DAPO (local Ray, 2 CPU workers) and report held-out sampled accuracy before and after;
   plot accuracy and response length per iteration next to the metrics (``logs/quickstart.png``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CONFIG_NAME = "quickstart_cpu"
TASK_NAME = "repeated_add"


@dataclasses.dataclass
class QuickstartResult:
    accuracy_before: float
    accuracy_after: float
    validation_prompts: int
    seconds: float
    history: list[dict[str, float]]
    plot: Path


def prepare_assets(workdir: Path, model_config, problems: int, warm_steps: int, seed: int,
                   max_prompt_length: int = 96) -> dict:  # fmt: skip
    """Steps 1-4; returns the paths the training config needs. Prompts longer than
    ``max_prompt_length`` tokens (rl_config's) are filtered out by the preprocessing."""
    from mindspeed_rl.checkpoint import mcore_layout
    from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
    from mindspeed_rl.data.preprocess import preprocess_dataset
    from mindspeed_rl.data.preprocess_config import PreprocessConfig
    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
    from mindspeed_rl.quickstart.math_task import corpus, make_problems, write_parquet
    from mindspeed_rl.quickstart.tiny_model import build_tiny_hf_model
    from mindspeed_rl.quickstart.warm_start import warm_start

    workdir.mkdir(parents=True, exist_ok=True)
    task = make_problems(problems, seed=seed)
    parquet = write_parquet(task, workdir / "data" / f"{TASK_NAME}.parquet")
    tokenizer_dir = build_toy_tokenizer(workdir / "tokenizer", corpus(task[:500]), vocab_size=400)
    hf_dir = workdir / "hf"
    model, tokenizer = build_tiny_hf_model(model_config, tokenizer_dir, hf_dir, seed=seed)
    # warm up on the training part only: the held-out prompts are the last 10% (split 90,10,0)
    start = time.perf_counter()
    losses = warm_start(model, tokenizer, task[: int(0.9 * problems)], steps=warm_steps, seed=seed)
    logger.info("warm start: %d steps, loss %.3f, %.1f s", warm_steps, losses[-1],
                time.perf_counter() - start)  # fmt: skip
    model.save_pretrained(str(hf_dir))
    mcore_dir = workdir / "mcore"
    convert_hf_to_mcore(
        HfToMcoreOptions(hf_dir=hf_dir, save_dir=mcore_dir, layout=mcore_layout.ShardLayout(),
                         padded_vocab_size=model_config.padded_vocab_size, force=True)
    )  # fmt: skip
    prefix = workdir / "data" / TASK_NAME
    preprocess_dataset(
        PreprocessConfig.from_dict(
            {
                "input": str(parquet),
                "tokenizer_name_or_path": str(hf_dir),
                "output_prefix": str(prefix),
                "handler_name": "Math17kAlpacaStyleInstructionHandler",
                "prompt_type": "chat_template",
                "workers": 1,
                "seq_length": max_prompt_length,
                "dataset_additional_keys": ["labels"],
                "map_keys": {
                    "prompt": "prompt",
                    "query": "",
                    "response": "reward_model",
                    "system": "",
                },
            },
            source="quickstart",
        )  # fmt: skip
    )
    return {"hf": hf_dir, "mcore": mcore_dir, "data": prefix}


def run_quickstart(
    workdir: str | Path = "outputs/quickstart",
    overrides: Sequence[str] = (),
    problems: int = 2400,
    warm_steps: int = 400,
    seed: int = 0,
    config_dir: str | Path | None = None,
) -> QuickstartResult:
    from mindspeed_rl.quickstart.plot import plot_run
    from mindspeed_rl.trainer.config_entry import load_run_config
    from mindspeed_rl.trainer.launch import run_training

    start = time.perf_counter()
    workdir = Path(workdir).resolve()
    torch.set_num_threads(2)
    base = load_run_config(CONFIG_NAME, config_dir, overrides)
    paths = prepare_assets(workdir, base.model, problems, warm_steps, seed)
    config = load_run_config(
        CONFIG_NAME,
        config_dir,
        [
            f"megatron_training.tokenizer_name_or_path={paths['hf']}",
            f"megatron_training.data_path={paths['data']}",
            f"actor_config.load={paths['mcore']}",
            *overrides,
        ],
    )
    result = run_training(config, log_dir=str(workdir / "logs"))
    validations = [h for h in result.history if "val/acc" in h]
    if len(validations) < 2:
        raise RuntimeError("the quickstart config must validate before and after training")
    rl = config.rl_config
    plot = plot_run(
        result.history, workdir / "logs" / "quickstart.png", rl.rollout_max_tokens,
        rl.overlong_buffer if rl.overlong_buffer_enable else None,
        title=f"DAPO on the repeated-addition task ({config.actor.train_iters} iterations)",
    )  # fmt: skip
    return QuickstartResult(
        accuracy_before=validations[0]["val/acc"],
        accuracy_after=validations[-1]["val/acc"],
        validation_prompts=int(validations[0]["val/prompts"]),
        seconds=time.perf_counter() - start,
        history=result.history,
        plot=plot,
    )
