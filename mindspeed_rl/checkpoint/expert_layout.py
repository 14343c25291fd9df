"""MoE expert layouts of one Megatron shard: ``GroupedMLP`` <-> ``SequentialMLP``, both ways.

Megatron keeps the routed experts of a layer in one of two ways, depending on
``moe_grouped_gemm`` (the Ascend Qwen3-30B-A3B recipes set it; CPU hosts have no grouped-GEMM
kernel and run only the per-expert layout):

==========  =============================================================  ========================
layout      names under ``decoder.layers.i.mlp.experts.``                   shape of one TP shard
==========  =============================================================  ========================
GROUPED     ``weight1``                                                     ``[H, E_l * X]``
            ``weight2``                                                     ``[E_l * Y, H]``
SEQUENTIAL  ``local_experts.e.linear_fc1.weight`` (e < E_l)                 ``[X, H]``
            ``local_experts.e.linear_fc2.weight``                           ``[H, Y]``
==========  =============================================================  ========================

with ``E_l = num_experts / EP`` local experts, ``X = 2 * F / TP`` (the rank's ``[gate_r; up_r]``
rows of SwiGLU, ``F / TP`` without it), ``Y = F / TP`` and ``F = moe_ffn_hidden_size``. Megatron
reads ``weight1.view(E_l, H, X)[e] = linear_fc1_e.T`` and ``weight2.view(E_l, Y, H)[e] =
linear_fc2_e.T`` (``models.tensor_layouts``). Both layouts hold the same TP shard of the same
local experts, so converting one rank's state dict needs no other rank: the functions below are
pure functions of ``(names, tensors)`` and the :class:`ExpertShapes` of the model, used where a
checkpoint meets a model of the other layout (``training_state.load_rank``) and to check a
checkpoint's expert count against a config (``mcore_to_hf``, ``load_rank``).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
from collections.abc import Iterable, Mapping

import torch

from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.models import tensor_layouts as tl

logger = logging.getLogger(__name__)

ROUTER = "mlp.router.weight"
_GROUPED = re.compile(r"^(?P<layer>(?:.*\.)?)mlp\.experts\.weight(?P<fc>[12])$")
_SEQUENTIAL = re.compile(
    r"^(?P<layer>(?:.*\.)?)mlp\.experts\.local_experts\.(?P<expert>\d+)\.linear_fc(?P<fc>[12])\."
    r"(?P<leaf>.+)$"
)
_EXPERTS = re.compile(r"^(?P<layer>(?:.*\.)?)mlp\.experts\.")


class ExpertLayout(enum.Enum):
    GROUPED = "grouped (GroupedMLP mlp.experts.weight1/weight2)"
    SEQUENTIAL = "per-expert (SequentialMLP mlp.experts.local_experts.N.linear_fc1/fc2)"


@dataclasses.dataclass(frozen=True)
class ExpertShapes:
    """What fixes the shapes of one rank's expert tensors: the model and its TP / EP sizes.

    ``tp`` is the expert tensor-parallel size (Megatron's default: the TP size).
    """

    num_experts: int
    ffn_hidden_size: int  # per expert (moe_ffn_hidden_size)
    hidden_size: int
    tp: int = 1
    ep: int = 1
    gated: bool = True  # SwiGLU: linear_fc1 holds [gate; up]

    @classmethod
    def from_model(cls, model: ModelConfig, tp: int = 1, ep: int = 1) -> ExpertShapes:
        assert model.num_experts, "a dense model has no experts"
        return cls(
            num_experts=model.num_experts,
            ffn_hidden_size=model.moe_ffn_hidden_size or model.ffn_hidden_size,
            hidden_size=model.hidden_size,
            tp=tp,
            ep=ep,
            gated=model.swiglu,
        )

    @classmethod
    def from_transformer_config(cls, config) -> ExpertShapes:
        """From a built model's megatron-core ``TransformerConfig``."""
        tp = getattr(config, "expert_tensor_parallel_size", None) or (
            config.tensor_model_parallel_size
        )
        return cls(
            num_experts=config.num_moe_experts,
            ffn_hidden_size=config.moe_ffn_hidden_size or config.ffn_hidden_size,
            hidden_size=config.hidden_size,
            tp=tp,
            ep=config.expert_model_parallel_size,
            gated=config.gated_linear_unit,
        )

    @property
    def local_experts(self) -> int:
        return self.num_experts // self.ep

    @property
    def fc1_rows(self) -> int:
        """Rows of one expert's ``linear_fc1`` TP shard (``X``)."""
        return (2 if self.gated else 1) * self.ffn_hidden_size // self.tp

    @property
    def fc2_cols(self) -> int:
        """Columns of one expert's ``linear_fc2`` TP shard (``Y``)."""
        return self.ffn_hidden_size // self.tp

    def grouped_shape(self, fc: int) -> tuple[int, int]:
        h, e = self.hidden_size, self.local_experts
        return (h, e * self.fc1_rows) if fc == 1 else (e * self.fc2_cols, h)

    def describe(self) -> str:
        return (
            f"num_experts={self.num_experts} ({self.local_experts} per EP rank at EP={self.ep}), "
            f"moe_ffn_hidden_size={self.ffn_hidden_size}, hidden_size={self.hidden_size}, "
            f"TP={self.tp}"
        )


def detect_layout(names: Iterable[str]) -> ExpertLayout | None:
    """The expert layout of a state dict's names; None when it holds no expert weights."""
    for name in names:
        if _GROUPED.match(name):
            return ExpertLayout.GROUPED
        if _SEQUENTIAL.match(name):
            return ExpertLayout.SEQUENTIAL
    return None


def check_expert_count(
    state: Mapping[str, torch.Tensor], shapes: ExpertShapes, source: str
) -> None:
    """Raise ValueError (naming both counts) when ``state``'s experts are not the config's.

    Checks every router (``[num_experts, H]`` on every rank), every grouped ``weight1/weight2``
    shape and, for per-expert shards, that each layer holds exactly local experts ``0..E_l-1``.
    """
    hint = "is the model config the one this checkpoint was made from?"
    for name, tensor in state.items():
        if name.endswith(ROUTER) and tensor.shape[0] != shapes.num_experts:
            raise ValueError(
                f"{source}: the checkpoint has {tensor.shape[0]} experts per layer ({name} "
                f"{list(tensor.shape)}) but the model config says num_experts="
                f"{shapes.num_experts}; {hint}"
            )
        match = _GROUPED.match(name)
        if match is None:
            continue
        fc = int(match["fc"])
        expected = shapes.grouped_shape(fc)
        if tuple(tensor.shape) != expected:
            raise ValueError(
                f"{source}: {name} has shape {list(tensor.shape)}"
                f"{_implied_experts(tensor, fc, shapes)}; the model config ({shapes.describe()}) "
                f"implies {list(expected)}; {hint}"
            )
    seen: dict[str, set[int]] = {}
    for name in state:
        match = _SEQUENTIAL.match(name)
        if match is not None:
            seen.setdefault(match["layer"], set()).add(int(match["expert"]))
    for layer, experts in seen.items():
        if experts != set(range(shapes.local_experts)):
            count = max(experts) + 1
            raise ValueError(
                f"{source}: {layer}mlp.experts holds local experts numbered up to "
                f"{count - 1} ({count} per EP rank = {count * shapes.ep} experts at EP="
                f"{shapes.ep}) but the model config says num_experts={shapes.num_experts} "
                f"({shapes.local_experts} per EP rank); {hint}"
            )


def _implied_experts(tensor: torch.Tensor, fc: int, shapes: ExpertShapes) -> str:
    """' = N experts of ...' when the shape is a whole number of the config's experts."""
    if tensor.dim() != 2:
        return ""
    size = tensor.shape[1] if fc == 1 else tensor.shape[0]
    per_expert = shapes.fc1_rows if fc == 1 else shapes.fc2_cols
    if size % per_expert:
        return ""
    local = size // per_expert
    return (
        f" = {local} local experts x {per_expert} (so {local * shapes.ep} experts at "
        f"EP={shapes.ep})"
    )


def to_sequential(
    state: Mapping[str, torch.Tensor], shapes: ExpertShapes, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """One rank's state dict with grouped experts rewritten per expert (same TP shard).

    Other entries are passed through as the same tensor objects, in their order; each layer's
    experts take the place of its ``weight1``, in Megatron's module order (expert 0 fc1, fc2,
    expert 1 fc1, ...). ``_extra_state`` entries of grouped experts are dropped.
    """
    check_expert_count(state, shapes, source)
    result: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _GROUPED.match(name)
        if match is None:
            if not (_EXPERTS.match(name) and name.endswith("_extra_state")):
                result[name] = tensor
            continue
        experts = f"{match['layer']}mlp.experts."
        if experts + "local_experts.0.linear_fc1.weight" in result:
            continue  # this layer's weight2, already unpacked with its weight1
        weight1, weight2 = _pair(state, experts, ("weight1", "weight2"), source)
        fc1 = tl.unpack_grouped_fc1(weight1, shapes.local_experts)
        fc2 = tl.unpack_grouped_fc2(weight2, shapes.local_experts)
        for e in range(shapes.local_experts):
            result[f"{experts}local_experts.{e}.linear_fc1.weight"] = fc1[e]
            result[f"{experts}local_experts.{e}.linear_fc2.weight"] = fc2[e]
    return result


def to_grouped(
    state: Mapping[str, torch.Tensor], shapes: ExpertShapes, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """One rank's state dict with per-expert weights packed as ``weight1/weight2``.

    Inverse of :func:`to_sequential`: ``to_grouped(to_sequential(s)) == s`` bit for bit. Other
    entries pass through unchanged; each layer's pair takes the place of its first expert
    tensor. ``_extra_state`` entries of the experts are dropped; expert biases have no
    ``GroupedMLP`` counterpart and are refused.
    """
    check_expert_count(state, shapes, source)
    result: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _SEQUENTIAL.match(name)
        if match is None:
            result[name] = tensor
            continue
        if match["leaf"].endswith("_extra_state"):
            continue
        if match["leaf"] != "weight":
            raise ValueError(
                f"{source}: {name}: GroupedMLP (moe_grouped_gemm) has no expert biases; load "
                "this checkpoint with moe_grouped_gemm: false"
            )
        experts = f"{match['layer']}mlp.experts."
        if experts + "weight1" in result:
            continue
        fc1, fc2 = zip(
            *(
                _pair(state, f"{experts}local_experts.{e}.", _FC_WEIGHTS, source)
                for e in range(shapes.local_experts)
            ),
            strict=True,
        )
        result[experts + "weight1"] = tl.pack_grouped_fc1(fc1)
        result[experts + "weight2"] = tl.pack_grouped_fc2(fc2)
    return result


_FC_WEIGHTS = ("linear_fc1.weight", "linear_fc2.weight")


def _pair(
    state: Mapping[str, torch.Tensor], prefix: str, leaves: tuple[str, str], source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [prefix + leaf for leaf in leaves if prefix + leaf not in state]
    if missing:
        raise ValueError(f"{source}: {missing[0]} is missing (expert weights come in pairs)")
    return state[prefix + leaves[0]], state[prefix + leaves[1]]


def convert(
    state: Mapping[str, torch.Tensor],
    shapes: ExpertShapes,
    target: ExpertLayout,
    source: str = "state dict",
) -> dict[str, torch.Tensor]:
    """``state`` in the ``target`` expert layout (checked and returned as is when already so)."""
    if target is ExpertLayout.GROUPED:
        return to_grouped(state, shapes, source)
    return to_sequential(state, shapes, source)


def match_model(
    state: Mapping[str, torch.Tensor],
    model_names: Iterable[str],
    shapes: ExpertShapes,
    source: str,
) -> dict[str, torch.Tensor]:
    """A checkpoint shard's ``state`` in the expert layout of the model whose state-dict names
    are ``model_names``: converted when they differ (logged once, by global rank 0), checked
    against the model's expert count either way."""
    found, wanted = detect_layout(state), detect_layout(model_names)
    check_expert_count(state, shapes, source)
    if found is None or wanted is None or found is wanted:
        return dict(state)
    converted = convert(state, shapes, wanted, source)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        logger.info(
            "%s: MoE experts are stored %s; converted on load to the model's %s layout "
            "(every rank converts its own shard)",
            source,
            found.value,
            wanted.value,
        )
    return converted
