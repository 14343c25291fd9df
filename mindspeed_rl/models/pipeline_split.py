"""How the transformer layers are split over pipeline stages: evenly, or as ``num_layer_list``.

``num_layer_list: 16,17,16,15`` (the Ascend suite's key, MindSpeed-LLM's ``--num-layer-list``)
gives stage ``r`` the next ``n_r`` consecutive layers; unset, each of the PP stages holds
``num_layers / PP``. One split serves the Megatron model build, the parameter mapping
(``param_mapping.WeightMapping.layer_range``: checkpoint conversion and weight sync), the
checkpoint's recorded layout and the memory plan.

Megatron-core builds an uneven split with its own options:

* megatron-core >= 0.13: ``pipeline_model_parallel_layout`` (any split; the first stage also
  holds the embedding, the last the loss);
* megatron-core 0.12: ``num_layers_in_first_pipeline_stage`` / ``..._last_...`` where they
  express the split (the middle stages even). For a split whose middle stages differ
  (``16,17,16,15``) 0.12 has no option: while the model is built (``building``), its two
  functions that place layers, ``get_num_layers_to_build`` and ``get_transformer_layer_offset``,
  answer from the split (what MindSpeed-LLM patches for ``--num-layer-list``), and are restored
  after. Both are read only at construction (the block's layer list, each layer's global
  ``layer_number``); megatron's distributed-checkpoint code, which reads the offset again, is
  not used here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

PipelineLayers = tuple[int, ...]


def parse_num_layer_list(text: str | int | Sequence[int] | None) -> PipelineLayers | None:
    """``"16,17,16,15"`` (or a YAML list) -> (16, 17, 16, 15); None when unset; ValueError naming
    what is wrong."""
    if text is None or text == "":
        return None
    parts = [str(p) for p in text] if isinstance(text, list | tuple) else str(text).split(",")
    try:
        counts = tuple(int(p.strip()) for p in parts)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a comma-separated list of layer counts, e.g. '16,17,16,15'"
        ) from None
    return counts


def split_problem(num_layers: int, pp: int, layers: Sequence[int] | None) -> str | None:
    """Why ``layers`` cannot split ``num_layers`` over ``pp`` stages, or None."""
    if layers is None:
        if num_layers % pp:
            divisors = [d for d in range(1, num_layers + 1) if num_layers % d == 0]
            example = ",".join(str(n) for n in _near_even(num_layers, pp))
            return (
                f"{num_layers} layers do not split evenly over {pp} pipeline stages; valid PP "
                f"sizes: {divisors}, or set num_layer_list (layers per stage, e.g. '{example}')"
            )
        return None
    if len(layers) != pp:
        return f"{len(layers)} stages listed but pipeline_model_parallel_size is {pp}"
    if any(n < 1 for n in layers):
        return f"{list(layers)}: every stage needs at least one layer"
    if sum(layers) != num_layers:
        return f"{list(layers)} sums to {sum(layers)}, the model has num_layers = {num_layers}"
    return None


def _near_even(num_layers: int, pp: int) -> list[int]:
    base, extra = divmod(num_layers, pp)
    return [base + (1 if r < extra else 0) for r in range(pp)]


def stage_layers(num_layers: int, pp: int, layers: Sequence[int] | None) -> PipelineLayers:
    """Layers per stage; ValueError from ``split_problem``."""
    problem = split_problem(num_layers, pp, layers)
    if problem is not None:
        raise ValueError(problem)
    return tuple(layers) if layers is not None else (num_layers // pp,) * pp


def stage_range(num_layers: int, pp: int, layers: Sequence[int] | None, pp_rank: int) -> range:
    """Global indices of the layers of stage ``pp_rank``."""
    counts = stage_layers(num_layers, pp, layers)
    start = sum(counts[:pp_rank])
    return range(start, start + counts[pp_rank])


def is_uneven(layers: Sequence[int] | None) -> bool:
    return layers is not None and len(set(layers)) > 1


def _first_last_fields(layers: Sequence[int]) -> dict[str, int] | None:
    """megatron-core 0.12's form: the first and / or last stage differ, the middle ones even."""
    if len(layers) == 2:
        return {"num_layers_in_first_pipeline_stage": layers[0]}  # the last takes the rest
    middle = set(layers[1:-1])
    if len(middle) != 1:
        return None
    (even,) = middle
    fields = {}
    if layers[0] != even:
        fields["num_layers_in_first_pipeline_stage"] = layers[0]
    if layers[-1] != even:
        fields["num_layers_in_last_pipeline_stage"] = layers[-1]
    return fields


def has_pipeline_layout(megatron_version: tuple[int, int]) -> bool:
    return megatron_version >= (0, 13)


def megatron_fields(
    layers: Sequence[int] | None, megatron_version: tuple[int, int]
) -> dict[str, Any]:
    """The ``TransformerConfig`` fields that build ``layers`` (none for an even split)."""
    if not is_uneven(layers):
        return {}
    if has_pipeline_layout(megatron_version):
        stages = [["decoder"] * n for n in layers]
        stages[0].insert(0, "embedding")
        stages[-1].append("loss")
        return {"pipeline_model_parallel_layout": stages}
    return _first_last_fields(layers) or {}


def needs_build_override(layers: Sequence[int] | None, megatron_version: tuple[int, int]) -> bool:
    """A split megatron-core's own options cannot express (0.12, middle stages differ)."""
    return (
        is_uneven(layers)
        and not has_pipeline_layout(megatron_version)
        and _first_last_fields(layers) is None
    )


@contextlib.contextmanager
def building(layers: Sequence[int] | None, megatron_version: tuple[int, int]) -> Iterator[None]:
    """Around the layer spec and ``GPTModel`` construction: on megatron-core 0.12 with a split of
    the middle stages, megatron's layer count and layer offset of this stage come from
    ``layers``; otherwise nothing changes."""
    if not needs_build_override(layers, megatron_version):
        yield
        return
    from megatron.core import parallel_state
    from megatron.core.transformer import transformer_block, transformer_layer

    def num_layers_to_build(config, *args, **kwargs) -> int:
        return layers[parallel_state.get_pipeline_model_parallel_rank()]

    def layer_offset(config, *args, **kwargs) -> int:
        return sum(layers[: parallel_state.get_pipeline_model_parallel_rank()])

    patched = (
        (transformer_block, "get_num_layers_to_build", num_layers_to_build),
        (transformer_block, "get_transformer_layer_offset", layer_offset),
        (transformer_layer, "get_transformer_layer_offset", layer_offset),
    )
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    try:
        for module, name, fn in patched:
            setattr(module, name, fn)
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
