"""Per-expert Hugging Face names -> the fused expert parameters of transformers >= 5.

The checkpoint format (conversion, ``models/param_mapping.py``) and the weight sync name each
expert's matrices separately, ``model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight``. In
memory, transformers 5 keeps the experts of a Qwen3-MoE layer (``Qwen3MoeExperts``) as two 3-D
parameters and converts on load:

==============================  ===================  =======================================
fused parameter                 shape                per-expert source
==============================  ===================  =======================================
``mlp.experts.gate_up_proj``    ``[E, 2F, H]``       ``[gate_K; up_K]`` stacked on dim 1
``mlp.experts.down_proj``       ``[E, H, F]``        ``down_K``
==============================  ===================  =======================================

:func:`expert_slot` says where a per-expert tensor lands in the fused parameter (a view of it),
so the HF engine copies every synced tensor in place without buffering a layer. Models that keep
per-expert modules (transformers 4) never reach this: their parameters carry the names as sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_PER_EXPERT = re.compile(
    r"^(?P<prefix>.+\.mlp\.experts)\.(?P<expert>\d+)\.(?P<proj>gate|up|down)_proj\.weight$"
)


def expert_slot(name: str, params: Mapping[str, torch.Tensor]) -> tuple[str, torch.Tensor] | None:
    """(fused parameter name, the view of it that ``name`` fills), or None when ``name`` is not
    a per-expert weight of a fused experts module in ``params``."""
    match = _PER_EXPERT.match(name)
    if match is None:
        return None
    prefix, expert, proj = match["prefix"], int(match["expert"]), match["proj"]
    fused_name = f"{prefix}.down_proj" if proj == "down" else f"{prefix}.gate_up_proj"
    fused = params.get(fused_name)
    if fused is None or fused.dim() != 3 or expert >= fused.shape[0]:
        return None
    if proj == "down":
        return fused_name, fused[expert]
    width = fused.shape[1] // 2  # F: gate rows first, then up (transformers' chunk(2, dim=-1))
    return fused_name, fused[expert, :width] if proj == "gate" else fused[expert, width:]


def copies_to_fill(name: str, param: torch.Tensor) -> int:
    """How many synced tensors fill parameter ``name`` completely: 2E per-expert tensors for a
    fused ``gate_up_proj`` (gate, up), E for a fused ``down_proj``, 1 for any other."""
    if param.dim() == 3 and name.endswith(".mlp.experts.gate_up_proj"):
        return 2 * param.shape[0]
    if param.dim() == 3 and name.endswith(".mlp.experts.down_proj"):
        return param.shape[0]
    return 1
