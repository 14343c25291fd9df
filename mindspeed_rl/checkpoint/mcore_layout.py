"""Megatron's legacy checkpoint layout: names, the tracker file, reading and writing one shard.

::

    <dir>/latest_checkpointed_iteration.txt          "release" or the iteration number
    <dir>/release/mp_rank_00/model_optim_rng.pt      TP rank (2 digits)
    <dir>/iter_0000050/mp_rank_01_002/...            + PP rank (3 digits) when PP > 1
    <dir>/release/mp_rank_00_000_001/...             + EP rank (3 digits) when EP > 1

This is what Megatron-LM and MindSpeed-LLM write (``get_checkpoint_name``), so weights converted
by MindSpeed-LLM load here and ours load there. A shard file is a ``torch.save`` dict holding
``model`` (the GPTModel state dict of that rank), ``checkpoint_version`` (3.0), ``iteration`` and,
in files written by this project, ``parallel_layout`` ({'tp', 'pp', 'ep', 'moe_tp_extend_ep'}) --
with PP = 1 and EP > 1 the directory ``mp_rank_00_001`` reads the same as PP = 2, EP = 1. Files
written by Megatron-LM / MindSpeed-LLM carry the same information in ``args`` (an
``argparse.Namespace``).

``moe_tp_extend_ep`` (MindSpeed's expert layout, ``models/placement.py``) must be recorded or
named: its grouped-GEMM expert shards have exactly the shapes of the default layout's, so only
the record tells which experts a shard holds.

Reading uses ``torch.load(weights_only=True)``; ``argparse.Namespace`` is allowed so that
Megatron-LM's files load too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mindspeed_rl.checkpoint import file_blocks
from mindspeed_rl.models import tensor_layouts as tl

TRACKER_FILE = "latest_checkpointed_iteration.txt"
SHARD_FILE = "model_optim_rng.pt"
RELEASE = "release"
CHECKPOINT_VERSION = 3.0

_SHARD_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?$")


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """TP / PP / EP sizes of a checkpoint on disk (and the layers per stage when uneven)."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    moe_tp_extend_ep: bool = False  # whole experts over TP x EP shards (models/placement.py)
    pipeline_layers: tuple[int, ...] | None = None  # num_layer_list; None: num_layers / PP

    def to_parallel(self):
        """The same sizes as the ``ParallelLayout`` Megatron is initialised with."""
        from mindspeed_rl.platform.distributed import ParallelLayout

        return ParallelLayout(
            self.tp, self.pp, self.ep, moe_tp_extend_ep=self.moe_tp_extend_ep,
            pipeline_layers=self.pipeline_layers,
        )  # fmt: skip

    def describe(self) -> str:
        extend = " moe_tp_extend_ep" if self.moe_tp_extend_ep else ""
        return f"TP={self.tp} PP={self.pp} EP={self.ep}{extend}"

    def positions(self) -> Iterator[tuple[int, int, int]]:
        """Every (tp_rank, pp_rank, ep_rank), pipeline stage outermost."""
        for pp_rank in range(self.pp):
            for ep_rank in range(self.ep):
                for tp_rank in range(self.tp):
                    yield tp_rank, pp_rank, ep_rank


def rank_position(layout: ShardLayout) -> tuple[int, int, int]:
    """This rank's shard ``(tp_rank, pp_rank, ep_rank)`` in ``layout``, from Megatron's parallel
    state. With ``moe_tp_extend_ep`` megatron-core's expert-parallel rank runs over TP x EP
    ranks (``ep_rank * TP + tp_rank``, ``models/placement.py``); the directory names MindSpeed's
    EP rank."""
    from megatron.core import parallel_state as ps

    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    if layout.ep == 1:
        return tp_rank, pp_rank, 0
    expert_rank = ps.get_expert_model_parallel_rank()
    if not layout.moe_tp_extend_ep:
        return tp_rank, pp_rank, expert_rank
    if expert_rank % layout.tp != tp_rank:
        raise RuntimeError(
            f"expert-parallel rank {expert_rank} is not TP rank {tp_rank} of its group: Megatron's "
            "rank order is not tp-cp-ep-dp-pp, so moe_tp_extend_ep shards would not match"
        )
    return tp_rank, pp_rank, expert_rank // layout.tp


def shard_dir_name(tp_rank: int, pp_rank: int, ep_rank: int, layout: ShardLayout) -> str:
    """``mp_rank_XX[_YYY][_ZZZ]`` exactly as Megatron's ``get_checkpoint_name`` builds it."""
    name = f"mp_rank_{tp_rank:02d}"
    if layout.pp > 1:
        name += f"_{pp_rank:03d}"
    if layout.ep > 1:
        name += f"_{ep_rank:03d}"
    return name


def iteration_dir_name(iteration: int | str) -> str:
    return RELEASE if iteration == RELEASE else f"iter_{int(iteration):07d}"


def shard_path(
    root: str | Path,
    iteration: int | str,
    tp_rank: int,
    pp_rank: int,
    ep_rank: int,
    layout: ShardLayout,
) -> Path:
    return (
        Path(root)
        / iteration_dir_name(iteration)
        / shard_dir_name(tp_rank, pp_rank, ep_rank, layout)
        / SHARD_FILE
    )


def write_tracker(root: str | Path, iteration: int | str) -> None:
    """Write the tracker last: a reader sees it only once every shard is in place."""
    path = Path(root) / TRACKER_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(iteration) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_tracker(root: str | Path) -> int | str:
    """The iteration named by ``<root>/latest_checkpointed_iteration.txt`` ('release' or int)."""
    if not Path(root).is_dir():
        raise ValueError(f"{root}: checkpoint directory not found")
    path = Path(root) / TRACKER_FILE
    if not path.is_file():
        raise ValueError(
            f"{path}: not found; a Megatron checkpoint directory holds this tracker file "
            "(is --load-dir the directory that contains release/ or iter_XXXXXXX/?)"
        )
    text = path.read_text(encoding="utf-8").strip()
    if text == RELEASE:
        return RELEASE
    if not text.isdigit():
        raise ValueError(f"{path}: expected 'release' or an iteration number, found {text!r}")
    return int(text)


def save_shard(
    path: Path,
    model_state: dict[str, Any],
    layout: ShardLayout,
    iteration: int | str = RELEASE,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write one rank's ``model_optim_rng.pt`` (creating its directory).

    Tensors are written as given: a view writes its whole underlying storage (e.g. a parameter
    that lives in a DDP buffer writes the buffer once, shared by all its views).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model_state,
        "checkpoint_version": CHECKPOINT_VERSION,
        "iteration": 0 if iteration == RELEASE else int(iteration),
        "parallel_layout": dataclasses.asdict(layout),
        **(extra or {}),
    }
    _save_without_crc32(payload, path)


def save_shard_blocks(
    path: Path,
    blocks: dict[str, list[tl.Block]],
    layout: ShardLayout,
    writer: file_blocks.BlockWriter,
    iteration: int | str = RELEASE,
    extra: dict[str, Any] | None = None,
) -> None:
    """:func:`save_shard` for a model state given as row blocks (``WeightMapping.shard_blocks``).

    The file is what :func:`save_shard` writes for the assembled tensors, but nothing is
    assembled: ``torch.save`` writes the structure with each storage left as a hole
    (``torch.serialization.skip_data``), then ``writer`` fills each tensor's record from its
    blocks, copying file to file what lies in a mapped input. Torch < 2.6 (no ``skip_data``)
    assembles the tensors and saves them.
    """
    if not hasattr(torch.serialization, "skip_data"):
        state = {name: tl.concat_blocks(b) for name, b in blocks.items()}
        save_shard(path, state, layout, iteration, extra)
        return
    # untouched allocations: the pages of an empty tensor are never faulted in
    skeleton = {
        name: torch.empty(tl.blocks_shape(b, name), dtype=b[0].dtype) for name, b in blocks.items()
    }
    with torch.serialization.skip_data():
        save_shard(path, skeleton, layout, iteration, extra)
    del skeleton
    written = load_shard(path)
    base = file_blocks.torch_file_base(path, written)
    if base is None:  # a torch.save format this code does not know
        raise RuntimeError(f"{path}: cannot locate the records torch.save just wrote")
    records = {name: (t.data_ptr() - base, t.nbytes) for name, t in written["model"].items()}
    del written
    fd = os.open(path, os.O_WRONLY)
    try:
        for name, b in blocks.items():
            offset, nbytes = records[name]
            if writer.write(fd, offset, b) - offset != nbytes:
                raise RuntimeError(f"{path}: {name}: the blocks do not fill its record")
    finally:
        os.close(fd)


def _save_without_crc32(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` without the zip CRC32 of each record.

    Computing it costs about as much as writing the bytes, and ``torch.load`` never checks it:
    PyTorch builds miniz with ``MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS`` (so files load on every
    torch version, including the 2.5 of Ascend hosts); only tools such as ``unzip -t`` would
    report the missing checksums. Torch < 2.6 has no switch and writes them.
    """
    set_crc32 = getattr(torch.serialization, "set_crc32_options", None)
    if set_crc32 is None:
        torch.save(payload, path)
        return
    previous = torch.serialization.get_crc32_options()
    set_crc32(False)
    try:
        torch.save(payload, path)
    finally:
        set_crc32(previous)


def load_shard(path: Path, mmap: bool = True) -> dict[str, Any]:
    """Read one ``model_optim_rng.pt``; ``mmap`` maps tensors instead of reading them all.

    Raises ValueError naming the file when it is missing, truncated or not a checkpoint.
    """
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint shard not found")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError
        raise ValueError(f"{path}: cannot be read as a Megatron checkpoint shard: {err}") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: no 'model' state dict in this file")
    return payload


def _layout_from_payload(payload: dict[str, Any]) -> ShardLayout | None:
    stored = payload.get("parallel_layout")
    if isinstance(stored, dict):
        layers = stored.get("pipeline_layers")
        fields = {k: v for k, v in stored.items() if k != "moe_tp_extend_ep"}
        return ShardLayout(**{**fields, "pipeline_layers": tuple(layers) if layers else None})
    args = payload.get("args")
    if args is not None and hasattr(args, "tensor_model_parallel_size"):
        # MindSpeed-LLM records an uneven split as the string num_layer_list ("16,17,16,15")
        layers = getattr(args, "num_layer_list", None)
        return ShardLayout(
            tp=int(args.tensor_model_parallel_size),
            pp=int(getattr(args, "pipeline_model_parallel_size", 1) or 1),
            ep=int(getattr(args, "expert_model_parallel_size", 1) or 1),
            pipeline_layers=tuple(int(n) for n in str(layers).split(",")) if layers else None,
        )
    return None


def recorded_tp_extend_ep(payload: dict[str, Any]) -> bool | None:
    """The shard's record of ``moe_tp_extend_ep``: this project's ``parallel_layout``, else the
    ``args`` of Megatron-LM / MindSpeed-LLM (training and conversion both store it); None when
    the file does not say."""
    stored = payload.get("parallel_layout")
    if isinstance(stored, dict) and "moe_tp_extend_ep" in stored:
        return bool(stored["moe_tp_extend_ep"])
    args = payload.get("args")
    value = getattr(args, "moe_tp_extend_ep", None)
    return None if value is None else bool(value)


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The shards of one iteration of a Megatron checkpoint."""

    root: Path
    iteration: int | str
    layout: ShardLayout

    def path(self, tp_rank: int, pp_rank: int, ep_rank: int) -> Path:
        return shard_path(self.root, self.iteration, tp_rank, pp_rank, ep_rank, self.layout)


def find_checkpoint(
    root: str | Path,
    num_layers: int | None = None,
    moe_tp_extend_ep: bool | None = None,
    asked_by: str = "moe_tp_extend_ep",
) -> CheckpointFiles:
    """Locate the shards named by the tracker and work out the TP / PP / EP layout.

    The layout comes from the shard's own record (``parallel_layout`` or Megatron-LM's ``args``);
    for files with neither, a two-part suffix (``mp_rank_00_001``) is PP when a shard holds fewer
    than ``num_layers`` layers and EP otherwise. Every expected shard must exist. The expert
    layout is the recorded one; ``moe_tp_extend_ep`` (named by ``asked_by`` in errors) must agree
    with a record and decides where there is none (None: the default layout).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: checkpoint directory not found")
    iteration = read_tracker(root)
    iter_dir = root / iteration_dir_name(iteration)
    if not iter_dir.is_dir():
        raise ValueError(f"{iter_dir}: named by {TRACKER_FILE} but missing")
    parsed = []
    for entry in sorted(iter_dir.iterdir()):
        match = _SHARD_DIR.match(entry.name)
        if match and entry.is_dir():
            parsed.append(tuple(int(g) if g is not None else None for g in match.groups()))
    if not parsed:
        raise ValueError(f"{iter_dir}: no mp_rank_XX shard directories")
    first = sorted(iter_dir.glob("mp_rank_*"))[0] / SHARD_FILE
    payload = load_shard(first)
    layout = _layout_from_payload(payload)
    if layout is None:
        layout = _infer_layout(parsed, first, num_layers)
    recorded = recorded_tp_extend_ep(payload)
    if recorded is not None and moe_tp_extend_ep is not None and recorded != moe_tp_extend_ep:
        raise ValueError(
            f"{first}: written with moe_tp_extend_ep={str(recorded).lower()} ("
            f"{'whole experts per TP rank' if recorded else 'experts split over TP'}) but "
            f"{asked_by} is {str(moe_tp_extend_ep).lower()}; the experts would land on the wrong "
            f"ranks: set {asked_by} to {str(recorded).lower()}"
        )
    extend = recorded if recorded is not None else bool(moe_tp_extend_ep)
    layout = dataclasses.replace(layout, moe_tp_extend_ep=extend)
    files = CheckpointFiles(root, iteration, layout)
    missing = [
        str(files.path(*pos)) for pos in layout.positions() if not files.path(*pos).is_file()
    ]
    if missing:
        raise ValueError(
            f"{iter_dir}: layout {layout.describe()} but "
            f"{len(missing)} shard(s) are missing, e.g. {missing[0]}"
        )
    return files


def _infer_layout(parsed: list[tuple], first: Path, num_layers: int | None) -> ShardLayout:
    tp = max(p[0] for p in parsed) + 1
    seconds = [p[1] for p in parsed if p[1] is not None]
    thirds = [p[2] for p in parsed if p[2] is not None]
    if thirds:
        return ShardLayout(tp, max(seconds) + 1, max(thirds) + 1)
    if not seconds:
        return ShardLayout(tp)
    size = max(seconds) + 1
    state = load_shard(first)["model"]
    layers = {k.split(".")[2] for k in state if k.startswith("decoder.layers.")}
    if num_layers is None:
        raise ValueError(f"{first.parent.parent}: cannot tell PP from EP without the layer count")
    return ShardLayout(tp, size, 1) if len(layers) < num_layers else ShardLayout(tp, 1, size)
