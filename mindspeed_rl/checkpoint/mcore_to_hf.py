"""Megatron legacy checkpoint -> Hugging Face safetensors shards + index + config + tokenizer.

The checkpoint's own layout (TP / PP / EP, grouped or sequential experts, padded vocabulary) is
read from its files. The model config comes from ``--hf-config-dir`` (the original Hugging Face
directory) or, for checkpoints written by this project, from the ``hf_config`` each shard
records. Conversion goes one pipeline stage and one layer at a time: every output tensor's
name, shape and dtype is known from the mapping and the shards' metadata before the first byte
is written, so each merged tensor goes straight to its safetensors shard (``hf_files``) as row
blocks: those that lie in a shard as they are (everything but row-parallel weights at TP > 1
and grouped experts) are copied file to file by the kernel, the rest is computed through one
bounded buffer (``file_blocks``). The stage's shards are memory-mapped afresh per layer and
unmapped after it. Peak memory: that buffer and the shard pages computed blocks read, at most
one layer.
Output is built in a temporary sibling of the target and renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from mindspeed_rl.checkpoint import hf_files, mcore_layout
from mindspeed_rl.checkpoint.atomic_dir import atomic_directory, check_target
from mindspeed_rl.checkpoint.expert_layout import ExpertShapes, check_expert_count
from mindspeed_rl.checkpoint.file_blocks import BlockWriter, MappedFiles, register_torch_file
from mindspeed_rl.checkpoint.hf_to_mcore import ConversionSummary
from mindspeed_rl.models.hf_config import model_config_from_hf
from mindspeed_rl.models.param_mapping import Param, WeightMapping
from mindspeed_rl.platform.distributed import ParallelLayout

logger = logging.getLogger(__name__)

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"


@dataclasses.dataclass(frozen=True)
class McoreToHfOptions:
    load_dir: Path
    save_dir: Path
    hf_config_dir: Path | None = None  # config.json (+ generation config, tokenizer) source
    tokenizer: Path | None = None  # tokenizer directory or file, copied into save_dir
    max_shard_bytes: int = 5 * 2**30
    expect_model_type: str | None = None
    force: bool = False


@dataclasses.dataclass(frozen=True)
class McorePlan:
    files: mcore_layout.CheckpointFiles
    mapping: WeightMapping
    hf_config: dict


def _hf_config(load_dir: Path, hf_config_dir: Path | None) -> dict:
    if hf_config_dir is not None:
        path = Path(hf_config_dir) / "config.json"
        if not path.is_file():
            raise ValueError(f"{path}: not found (--hf-config-dir must hold config.json)")
        return json.loads(path.read_text(encoding="utf-8"))
    iteration = mcore_layout.read_tracker(load_dir)
    iter_dir = Path(load_dir) / mcore_layout.iteration_dir_name(iteration)
    shards = sorted(iter_dir.glob(f"mp_rank_*/{mcore_layout.SHARD_FILE}"))
    if not shards:
        raise ValueError(f"{iter_dir}: no mp_rank_XX/{mcore_layout.SHARD_FILE} shards")
    recorded = mcore_layout.load_shard(shards[0]).get("hf_config")
    if not isinstance(recorded, str):
        raise ValueError(
            f"{load_dir}: the checkpoint does not record its Hugging Face config; pass "
            "--hf-config-dir <the original Hugging Face model directory>"
        )
    return json.loads(recorded)


def plan_mcore_to_hf(
    load_dir: Path, hf_config_dir: Path | None = None, expect_model_type: str | None = None
) -> McorePlan:
    """Find the shards and build the mapping of the checkpoint's own layout (no writes)."""
    raw = _hf_config(load_dir, hf_config_dir)
    config_file = Path(hf_config_dir or load_dir) / "config.json"
    info = model_config_from_hf(raw, source=str(config_file))
    if expect_model_type is not None and expect_model_type != info.model_type:
        raise ValueError(
            f"--model-type-hf names {expect_model_type!r} but the config says {info.model_type!r}"
        )
    files = mcore_layout.find_checkpoint(load_dir, info.model.num_layers)
    layout = files.layout
    first = mcore_layout.load_shard(files.path(0, 0, 0))["model"]
    if EMBEDDING not in first:
        raise ValueError(f"{files.path(0, 0, 0)}: no {EMBEDDING}; not a GPTModel first stage")
    grouped = any(k.endswith("mlp.experts.weight1") for k in first)
    model = info.model.model_copy(
        update={
            "padded_vocab_size": first[EMBEDDING].shape[0] * layout.tp,
            "moe_grouped_gemm": grouped,
        }
    )
    mapping = WeightMapping(
        model,
        info.vocab_size,
        ParallelLayout(layout.tp, layout.pp, layout.ep, pipeline_layers=layout.pipeline_layers),
    )
    _check_experts(mapping, first, files.path(0, 0, 0))
    return McorePlan(files, mapping, raw)


def _check_experts(mapping: WeightMapping, state: dict, path: Path) -> None:
    """A checkpoint of another expert count than the config's: one error naming both."""
    if mapping.num_experts:
        shapes = ExpertShapes.from_model(mapping.model, mapping.tp, mapping.ep)
        check_expert_count(state, shapes, str(path))


def load_stage(
    plan: McorePlan, pp_rank: int, regions: MappedFiles | None = None
) -> dict[tuple[int, int], dict]:
    """The memory-mapped state dicts of one pipeline stage, keyed (tp_rank, ep_rank); checks
    that each holds exactly the parameters the mapping expects. Each file's mapping is
    registered in ``regions`` (when given) for file-to-file copies."""
    layout, mapping = plan.files.layout, plan.mapping
    shards = {}
    for ep_rank in range(layout.ep):
        expected = {p.name for p in mapping.params(pp_rank, ep_rank)}
        for tp_rank in range(layout.tp):
            path = plan.files.path(tp_rank, pp_rank, ep_rank)
            payload = mcore_layout.load_shard(path)
            if regions is not None:
                register_torch_file(regions, path, payload)
            state = payload["model"]
            _check_experts(mapping, state, path)
            names = {k for k in state if not k.endswith("._extra_state")}
            missing, unknown = sorted(expected - names), sorted(names - expected)
            if missing or unknown:
                raise ValueError(
                    f"{path}: does not match the {mapping.model.num_layers}-layer model of the "
                    f"config in layout TP={layout.tp} PP={layout.pp} EP={layout.ep}: "
                    f"missing {missing[:3]}, unknown {unknown[:3]}"
                )
            shards[tp_rank, ep_rank] = state
    return shards


def _is_expert(name: str) -> bool:
    return ".mlp.experts." in name


def _hf_order(plan: McorePlan, pp_rank: int) -> list[list[tuple[int, Param]]]:
    """Per layer bucket of one stage, the (EP rank, parameter) pairs that produce HF tensors.

    Non-expert parameters are replicated over EP ranks and taken from EP rank 0; a tied output
    layer is skipped (its HF tensor is the embedding).
    """
    layout, mapping = plan.files.layout, plan.mapping
    tied = not mapping.model.untie_embeddings_and_output_weights
    buckets = [mapping.buckets(pp_rank, ep_rank) for ep_rank in range(layout.ep)]
    order = []
    for index in range(len(buckets[0])):
        order.append(
            [
                (ep_rank, param)
                for ep_rank in range(layout.ep)
                for param in buckets[ep_rank][index]
                if (ep_rank == 0 or _is_expert(param.name))
                and not (tied and param.name == OUTPUT_LAYER)
            ]
        )
    return order


def _announce(plan: McorePlan) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Every HF tensor the conversion will write, in order, with its shape and dtype."""
    shapes = plan.mapping.hf_shapes()
    entries = []
    for pp_rank in range(plan.files.layout.pp):
        shards = load_stage(plan, pp_rank)  # metadata only: nothing is read from the maps
        for bucket in _hf_order(plan, pp_rank):
            for ep_rank, param in bucket:
                dtype = shards[0, ep_rank][param.name].dtype
                entries += [(name, shapes[name], dtype) for name in param.hf]
    return entries


def convert_mcore_to_hf(opts: McoreToHfOptions) -> ConversionSummary:
    start = time.perf_counter()
    check_target(Path(opts.save_dir), opts.force)
    if opts.tokenizer is not None and not Path(opts.tokenizer).exists():
        raise ValueError(f"--tokenizer-model {opts.tokenizer}: not found")
    plan = plan_mcore_to_hf(opts.load_dir, opts.hf_config_dir, opts.expect_model_type)
    layout, mapping = plan.files.layout, plan.mapping
    entries = _announce(plan)
    regions = MappedFiles()
    block_writer = BlockWriter(regions)
    with atomic_directory(opts.save_dir, opts.force) as tmp:
        writer = hf_files.ShardedSafetensorsWriter(tmp, entries, opts.max_shard_bytes, block_writer)
        try:
            for pp_rank in range(layout.pp):
                for bucket in _hf_order(plan, pp_rank):
                    # the stage's shards are mapped afresh per layer and unmapped after it, so
                    # the pages read stay resident for one layer only
                    shards = load_stage(plan, pp_rank, regions)
                    for ep_rank, param in bucket:
                        tp_shards = [shards[t, ep_rank][param.name] for t in range(layout.tp)]
                        for name, tensor_blocks in mapping.merge_blocks(param, tp_shards):
                            writer.add(name, tensor_blocks)
                        del tp_shards
                    regions.clear()
                    del shards
                logger.info("converted pipeline stage %d", pp_rank)
            written = writer.finish()
        finally:
            writer.close()
            regions.clear()
        (tmp / "config.json").write_text(json.dumps(plan.hf_config, indent=2) + "\n")
        copied: list[str] = []
        if opts.hf_config_dir is not None:
            extras = (hf_files.GENERATION_CONFIG, *hf_files.TOKENIZER_FILES)
            copied += hf_files.copy_model_files(Path(opts.hf_config_dir), tmp, extras)
        if opts.tokenizer is not None:
            copied += hf_files.copy_model_files(Path(opts.tokenizer), tmp, hf_files.TOKENIZER_FILES)
        if not set(copied) & set(hf_files.TOKENIZER_FILES):
            logger.warning(
                "no tokenizer files copied: pass --tokenizer-model or --hf-config-dir to include them"
            )
    seconds = time.perf_counter() - start
    return ConversionSummary(len(written), writer.total_bytes, seconds, block_writer.kernel_bytes)
