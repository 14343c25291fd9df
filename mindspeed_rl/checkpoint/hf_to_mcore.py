"""Hugging Face safetensors -> Megatron legacy checkpoint (``release``), streaming.

Every check runs before the first byte is written: the config translates
(``models.hf_config``), the layout divides (``models.param_mapping``), every tensor the model needs
is present with its expected shape and nothing unexpected is left over (a conversion that drops
a tensor silently is how "converted fine but logits differ" happens). Then one output shard
(TP rank x PP stage x EP rank) at a time is written from only the rows / columns it needs: the
row blocks that lie in the input as they are (most of them) are copied file to file by the
kernel, the rest is computed through a bounded buffer (``file_blocks``), so peak memory stays
at about one output shard or less. Output goes to a temporary sibling of the
target and is renamed into place at the end (``atomic_dir``).

Each shard also records ``hf_config`` (the source config.json, as JSON text) so that the reverse
conversion and the logits check need no other input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.atomic_dir import atomic_directory, check_target
from mindspeed_rl.checkpoint.file_blocks import BlockWriter
from mindspeed_rl.checkpoint.hf_files import SafetensorsSource
from mindspeed_rl.models.hf_config import read_hf_config
from mindspeed_rl.models.param_mapping import WeightMapping
from mindspeed_rl.models.tensor_layouts import blocks_nbytes
from mindspeed_rl.platform.distributed import ParallelLayout

logger = logging.getLogger(__name__)

# Tensors some Hugging Face files carry that are not parameters of the model.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class HfToMcoreOptions:
    hf_dir: Path
    save_dir: Path
    layout: mcore_layout.ShardLayout = mcore_layout.ShardLayout()
    make_vocab_size_divisible_by: int = 1
    padded_vocab_size: int | None = None  # None: pad vocab to divisible_by x TP
    grouped_experts: bool = False  # MoE experts as GroupedMLP weight1/weight2
    expect_model_type: str | None = None  # --model-type-hf, checked against config.json
    force: bool = False


@dataclasses.dataclass(frozen=True)
class ConversionSummary:
    files: int
    bytes: int
    seconds: float
    kernel_bytes: int = 0  # of ``bytes``, copied file to file by the kernel


def plan_hf_to_mcore(opts: HfToMcoreOptions) -> tuple[WeightMapping, SafetensorsSource, dict]:
    """Read and check everything the conversion needs; raises ValueError on any problem."""
    layout = opts.layout
    info, raw = read_hf_config(
        opts.hf_dir,
        make_vocab_size_divisible_by=opts.make_vocab_size_divisible_by,
        tensor_parallel_size=layout.tp,
    )
    if opts.expect_model_type is not None and opts.expect_model_type != info.model_type:
        raise ValueError(
            f"--model-type-hf names {opts.expect_model_type!r} but {opts.hf_dir}/config.json "
            f"says model_type {info.model_type!r}"
        )
    update: dict = {"moe_grouped_gemm": opts.grouped_experts and bool(info.model.num_experts)}
    if opts.padded_vocab_size is not None:
        update["padded_vocab_size"] = opts.padded_vocab_size
    model = info.model.model_copy(update=update)
    mapping = WeightMapping(
        model,
        info.vocab_size,
        ParallelLayout(layout.tp, layout.pp, layout.ep, pipeline_layers=layout.pipeline_layers),
    )
    source = SafetensorsSource(opts.hf_dir)
    check_hf_tensors(mapping, source)
    return mapping, source, raw


def check_hf_tensors(mapping: WeightMapping, source: SafetensorsSource) -> None:
    """Every expected tensor present with its shape; nothing unexplained left over."""
    expected = mapping.hf_shapes()
    present = set(source.names())
    missing = sorted(set(expected) - present)
    if missing:
        raise ValueError(
            f"{source.dir}: {len(missing)} tensor(s) the model needs are missing, e.g. "
            f"{missing[:3]} (is config.json from the same model as the weights?)"
        )
    for name, shape in expected.items():
        if source.shape(name) != shape:
            raise ValueError(
                f"{source.dir}: {name} has shape {list(source.shape(name))}, config.json implies "
                f"{list(shape)}"
            )
    extra = sorted(n for n in present - set(expected) if not n.endswith(_IGNORED_SUFFIXES))
    tied = not mapping.model.untie_embeddings_and_output_weights
    if tied and "lm_head.weight" in extra:
        extra.remove("lm_head.weight")  # a copy of the tied embedding some exporters write
    if extra:
        raise ValueError(
            f"{source.dir}: {len(extra)} tensor(s) the {mapping.model.num_layers}-layer model "
            f"does not use, e.g. {extra[:3]}; refusing to drop weights silently"
        )


def convert_hf_to_mcore(opts: HfToMcoreOptions) -> ConversionSummary:
    """Convert ``opts.hf_dir`` into ``opts.save_dir`` (Megatron legacy layout, ``release``)."""
    start = time.perf_counter()
    check_target(Path(opts.save_dir), opts.force)
    mapping, source, raw = plan_hf_to_mcore(opts)
    layout = opts.layout
    extra = {"hf_config": json.dumps(raw)}
    writer = BlockWriter(source.regions)
    total = files = 0
    try:
        with atomic_directory(opts.save_dir, opts.force) as tmp:
            for tp_rank, pp_rank, ep_rank in layout.positions():
                blocks = {
                    param.name: mapping.shard_blocks(param, source, tp_rank)
                    for param in mapping.params(pp_rank, ep_rank)
                }
                path = mcore_layout.shard_path(
                    tmp, mcore_layout.RELEASE, tp_rank, pp_rank, ep_rank, layout
                )
                mcore_layout.save_shard_blocks(
                    path, blocks, layout, writer, mcore_layout.RELEASE, extra
                )
                total += sum(blocks_nbytes(b) for b in blocks.values())
                files += 1
                del blocks
                source.release()
                logger.info("wrote %s", path.relative_to(tmp))
            mcore_layout.write_tracker(tmp, mcore_layout.RELEASE)
    finally:
        source.release()
    return ConversionSummary(files, total, time.perf_counter() - start, writer.kernel_bytes)
