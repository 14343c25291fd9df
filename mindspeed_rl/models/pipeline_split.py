"""How the transformer layers are split over pipeline stages: evenly, or as ``num_layer_list``.

``num_layer_list: 16,17,16,15`` (the Ascend suite's key, MindSpeed-LLM's ``--num-layer-list``)
gives stage ``r`` the next ``n_r`` consecutive layers; unset, each of the PP stages holds
``num_layers / PP``. One split serves the Megatron model build, the parameter mapping
(``param_mapping.WeightMapping.layer_range``: checkpoint conversion and weight sync), the
checkpoint's recorded layout and the memory plan.

Megatron-core builds an uneven split with its own options:

* megatron-core >= 0.13: ``pipeline_model_parallel_layout`` (any split; the first stage also
  holds the embedding, the last the loss);
* megatron-core 0.12: ``num_layers_in_first_pipeline_stage`` / ``..._last_...``, the middle
  stages even. A split whose middle stages differ (``16,17,16,15``) is refused there by
  ``split_problem`` (``--dry-run``), naming the version that builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def installed_megatron_version() -> tuple[int, int]:
    """megatron-core's (major, minor) from the package metadata, without importing it (the
    platform layer must prepare the process before megatron is imported)."""
    from importlib import metadata

    try:
        text = metadata.version("megatron-core")
    except metadata.PackageNotFoundError:  # Megatron-LM from source under another name
        from megatron.core import package_info

        text = package_info.__version__
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def has_pipeline_layout(megatron_version: tuple[int, int]) -> bool:
    return megatron_version >= (0, 13)


def version_problem(layers: Sequence[int] | None, megatron_version: tuple[int, int]) -> str | None:
    """Why this megatron-core cannot build ``layers``, or None."""
    if not is_uneven(layers) or has_pipeline_layout(megatron_version):
        return None
    if _first_last_fields(layers) is None:
        major, minor = megatron_version
        return (
            f"{','.join(map(str, layers))}: megatron-core {major}.{minor} splits unevenly only "
            "the first and last stage (num_layers_in_first/last_pipeline_stage), the middle "
            "stages must be equal; megatron-core >= 0.13 builds any split "
            "(pipeline_model_parallel_layout)"
        )
    return None


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
    fields = _first_last_fields(layers)
    if fields is None:
        raise ValueError(version_problem(layers, megatron_version))
    return fields
