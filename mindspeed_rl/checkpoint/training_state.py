"""Training checkpoints of a DAPO run in Megatron's legacy layout, written atomically.

::

    <save>/latest_checkpointed_iteration.txt
    <save>/iter_0000050/mp_rank_XX[_YYY][_ZZZ]/model_optim_rng.pt   model, optimizer, LR schedule,
                                                                     RNG, iteration, args
    <save>/iter_0000050/mp_rank_XX[...]/distrib_optim.pt            distributed-optimizer shards
    <save>/iter_0000050/trainer_state.pt                            driver: data position,
                                                                     dynamic-sampling counters

Every shard also records ``hf_config``, the Hugging Face config.json of the model as JSON text
(carried from the loaded checkpoint, which conversion hf -> mg recorded, else read from
``tokenizer_name_or_path``), so that ``convert_ckpt.py`` mg -> hf needs no ``--hf-config-dir``.

Every rank writes into ``<save>/.tmp_iter_0000050/``; once all ranks are done (the trainer waits for
every worker) one finalizer per storage domain fsyncs, renames the directory to ``iter_0000050``,
writes ``trainer_state.pt`` and only then the tracker. A crash at any point leaves the previous
checkpoint and tracker untouched; a stale ``.tmp_iter_*`` is removed by the next save. With
``no_shared_storage`` every node does this for its own ranks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindspeed_rl.checkpoint import expert_layout, mcore_layout
from mindspeed_rl.checkpoint.mcore_layout import ShardLayout

TRAINER_STATE = "trainer_state.pt"
DISTRIB_OPTIM = "distrib_optim.pt"
_TMP_PREFIX = ".tmp_"


def tmp_iteration_dir(root: str | Path, iteration: int) -> Path:
    return Path(root) / (_TMP_PREFIX + mcore_layout.iteration_dir_name(iteration))


def rng_state() -> dict[str, Any]:
    """Every RNG of this rank, as types ``torch.load(weights_only=True)`` accepts."""
    from megatron.core import tensor_parallel

    from mindspeed_rl.platform import device

    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    return {
        "random": random.getstate(),
        "numpy": (
            np_kind,
            torch.from_numpy(np_keys.copy()),
            int(np_pos),
            int(np_gauss),
            float(np_cached),
        ),  # fmt: skip
        "torch": torch.get_rng_state(),
        "device": device.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    from megatron.core import tensor_parallel

    from mindspeed_rl.platform import device

    random.setstate(state["random"])
    kind, keys, pos, gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, gauss, cached))
    torch.set_rng_state(state["torch"])
    device.set_rng_state(state["device"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _fsync_tree(path: Path) -> None:
    for file in sorted(path.rglob("*")):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    for directory in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def hf_config_record(loaded: str | None, hf_dir: str | Path) -> str:
    """The ``hf_config`` a training checkpoint records: the loaded checkpoint's own record when it
    has one (``load_rank`` returns it), else ``hf_dir``'s config.json, as compact JSON text."""
    if isinstance(loaded, str):
        return loaded
    path = Path(hf_dir) / "config.json"
    try:
        return json.dumps(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot be read as JSON ({err})") from err


def save_rank(
    actor,
    root: str | Path,
    iteration: int,
    layout: ShardLayout,
    position: tuple[int, int, int],
    args: dict[str, Any],
    save_optim: bool,
    save_rng: bool,
    hf_config: str | None = None,
) -> Path:
    """This rank's shard into the temporary iteration directory (a collective with the
    distributed optimizer: every DP rank must call it). ``hf_config``: ``hf_config_record``."""
    tmp = tmp_iteration_dir(root, iteration)
    path = tmp / mcore_layout.shard_dir_name(*position, layout) / mcore_layout.SHARD_FILE
    model = {k: v for k, v in actor.module.state_dict().items() if not k.endswith("_extra_state")}
    extra: dict[str, Any] = {"args": args, "opt_param_scheduler": actor.scheduler.state_dict()}
    if hf_config is not None:
        extra["hf_config"] = hf_config
    if save_optim:
        extra["optimizer"] = actor.optimizer.state_dict()
    if save_rng:
        extra["rng_state"] = [rng_state()]
    mcore_layout.save_shard(path, model, layout, iteration, extra)
    if save_optim and actor.actor_config.use_distributed_optimizer:
        actor.optimizer.save_parameter_state(str(path.parent / DISTRIB_OPTIM))
    return path


def finalize(
    root: str | Path, iteration: int, trainer_state: dict[str, Any], keep_last: int = 0
) -> Path:
    """Make the temporary iteration directory the checkpoint, then move the tracker to it."""
    root = Path(root)
    tmp = tmp_iteration_dir(root, iteration)
    if not tmp.is_dir():
        raise ValueError(f"{tmp}: no shard was written for iteration {iteration}")
    torch.save(trainer_state, tmp / TRAINER_STATE)
    _fsync_tree(tmp)
    final = root / mcore_layout.iteration_dir_name(iteration)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    mcore_layout.write_tracker(root, iteration)
    _prune(root, keep_last, iteration)
    return final


def _prune(root: Path, keep_last: int, current: int) -> None:
    for stale in root.glob(_TMP_PREFIX + "iter_*"):
        if stale.name != tmp_iteration_dir(root, current).name:
            shutil.rmtree(stale, ignore_errors=True)
    if keep_last <= 0:
        return
    iterations = sorted(
        int(p.name[len("iter_") :]) for p in root.glob("iter_*") if p.name[5:].isdigit()
    )
    for old in iterations[:-keep_last]:
        shutil.rmtree(root / mcore_layout.iteration_dir_name(old), ignore_errors=True)


def resolve_iteration(root: str | Path, iteration: int | None) -> int:
    """The iteration to resume: ``iteration`` if given, else the tracker's."""
    root = Path(root)
    found = mcore_layout.read_tracker(root) if iteration is None else iteration
    if found == mcore_layout.RELEASE:
        raise ValueError(
            f"{root}: holds converted weights ('release'), not a training checkpoint; use "
            "actor_config.finetune: true to start from them"
        )
    if not (root / mcore_layout.iteration_dir_name(found)).is_dir():
        raise ValueError(f"{root}: iteration {found} not found")
    return int(found)


def load_model(
    module: torch.nn.Module,
    root: str | Path,
    iteration: int | str,
    layout: ShardLayout,
    position: tuple[int, int, int],
) -> dict[str, Any]:
    """Load this rank's model weights from ``root``'s ``iteration`` ('release' for converted
    weights); returns the shard's payload. The checkpoint's TP / PP / EP layout (and its recorded
    ``moe_tp_extend_ep``) and every parameter
    shape must fit the model (a mismatch names both); MoE experts are re-laid out when the
    checkpoint's expert layout (grouped GEMM or per expert) differs from the model's."""
    files = mcore_layout.find_checkpoint(
        root,
        module.config.num_layers,
        layout.moe_tp_extend_ep,
        asked_by="actor_config.moe_tp_extend_ep",
    )
    if files.layout != layout:
        raise ValueError(
            f"{root}: checkpoint layout {files.layout.describe()} does not fit the run's "
            f"{layout.describe()}"
        )
    path = mcore_layout.shard_path(root, iteration, *position, layout)
    payload = mcore_layout.load_shard(path, mmap=False)
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("_extra_state")}
    state = payload["model"]
    config = module.config
    if getattr(config, "num_moe_experts", None):
        # a grouped-GEMM checkpoint on a per-expert model (CPU) or the reverse: same TP shard of
        # the same local experts, re-laid out in place; a wrong expert count is named here
        shapes = expert_layout.ExpertShapes.from_transformer_config(config)
        state = expert_layout.match_model(state, own, shapes, str(path))
    mismatch = [
        f"{k}: checkpoint {tuple(state[k].shape) if k in state else 'missing'} vs model "
        f"{tuple(v.shape)}"
        for k, v in own.items()
        if k not in state or state[k].shape != v.shape
    ]
    if mismatch:
        raise ValueError(f"{path}: does not fit the model: " + "; ".join(mismatch[:5]))
    held, built = _layer_count(state), _layer_count(own)
    if held != built:  # another split of the layers over the stages (num_layer_list)
        raise ValueError(
            f"{path}: this pipeline stage holds {held} layers in the checkpoint but {built} in "
            f"the model; set actor_config.num_layer_list to the checkpoint's split "
            f"({files.layout.pipeline_layers or 'even'})"
        )
    module.load_state_dict({k: state[k] for k in own}, strict=False)
    payload["path"] = str(path)
    return payload


def _layer_count(state: dict[str, Any]) -> int:
    return len({k.split(".")[2] for k in state if k.startswith("decoder.layers.")})


def load_rank(
    actor,
    root: str | Path,
    iteration: int | str,
    layout: ShardLayout,
    position: tuple[int, int, int],
    load_optim: bool,
    load_rng: bool,
) -> dict[str, Any]:
    """Restore the actor of this rank: the model (``load_model``) always, the optimizer / LR
    schedule and the RNG when asked. Returns the iteration and the shard's ``hf_config`` record
    (None when it has none)."""
    payload = load_model(actor.module, root, iteration, layout, position)
    path = Path(payload["path"])
    if load_optim:
        if "optimizer" not in payload:
            raise ValueError(f"{path}: saved without optimizer state; set no_load_optim: true")
        actor.optimizer.load_state_dict(payload["optimizer"])
        if actor.actor_config.use_distributed_optimizer:
            actor.optimizer.load_parameter_state(str(path.parent / DISTRIB_OPTIM))
        actor.scheduler.load_state_dict(payload["opt_param_scheduler"])
    else:
        # the optimizer copied its fp32 main weights from the freshly initialised model when it
        # was built; without optimizer state they must be refreshed from the loaded weights (what
        # Megatron-LM's load_checkpoint does), or the first step writes init + update back
        actor.optimizer.reload_model_params()
    if load_rng:
        if "rng_state" not in payload:
            raise ValueError(f"{path}: saved without RNG state; set no_load_rng: true")
        set_rng_state(payload["rng_state"][0])
    return {"iteration": payload["iteration"], "hf_config": payload.get("hf_config")}


def load_trainer_state(root: str | Path, iteration: int) -> dict[str, Any]:
    path = Path(root) / mcore_layout.iteration_dir_name(iteration) / TRAINER_STATE
    if not path.is_file():
        raise ValueError(
            f"{path}: not found; this is not a checkpoint of a DAPO run (only weights?) -- use "
            "actor_config.finetune: true to start from its weights"
        )
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001  (a damaged file: name it)
        raise ValueError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
