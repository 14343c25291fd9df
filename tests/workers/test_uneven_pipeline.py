"""``num_layer_list``: a 4-layer model split 1 + 3 over two pipeline stages scores like one stage.

The tiny Llama is converted by the real converter twice (PP 1, and PP 2 with ``--num-layer-list
1,3``); an actor built in each split loads its shards, scores the same mini-batch and syncs its
weights out. megatron-core builds the uneven split with ``pipeline_model_parallel_layout`` on
0.16.1 (``megatron/core/transformer/pipeline_parallel_layer_layout.py``) and with
``num_layers_in_first_pipeline_stage`` on 0.12.3 (``transformer_block.get_num_layers_to_build``).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
from mindspeed_rl.checkpoint.mcore_to_hf import McoreToHfOptions, convert_mcore_to_hf
from tests.distributed_harness import run_distributed
from tests.models import tiny_hf
from tests.workers import uneven_pipeline_case

pytestmark = [pytest.mark.slow, pytest.mark.megatron_smoke]
SPLIT = (1, 3)


def _hf_tensors(directory) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _convert(hf_dir, out, layout) -> str:
    convert_hf_to_mcore(HfToMcoreOptions(hf_dir, out, layout, make_vocab_size_divisible_by=16))
    return str(out)


def test_a_one_plus_three_split_scores_and_syncs_like_one_stage(tmp_path):
    hf_dir = tiny_hf.save_tiny_model("llama", tmp_path / "hf", seed=3)
    hf = _hf_tensors(hf_dir)
    one = _convert(hf_dir, tmp_path / "pp1", mcore_layout.ShardLayout())
    uneven = _convert(
        hf_dir, tmp_path / "pp2", mcore_layout.ShardLayout(pp=2, pipeline_layers=SPLIT)
    )
    # the split is recorded with the shards and read back (conversion back to HF needs it)
    assert mcore_layout.find_checkpoint(uneven).layout.pipeline_layers == SPLIT
    back = tmp_path / "back"
    convert_mcore_to_hf(McoreToHfOptions(load_dir=tmp_path / "pp2", save_dir=back))
    assert all(torch.equal(t, hf[name]) for name, t in _hf_tensors(back).items())

    (single,) = run_distributed(uneven_pipeline_case.run, 1, one, 0)
    first, last = run_distributed(uneven_pipeline_case.run, 2, uneven, 1)
    assert first["layers"] + last["layers"] == [1, 3]
    assert first["numbers"] + last["numbers"] == [1, 2, 3, 4]  # global layer numbers
    assert first["log_probs"] is None
    mask = single["mask"]
    assert single["log_probs"][mask].abs().min() > 0.1  # real, varied log-probs
    torch.testing.assert_close(last["log_probs"][mask], single["log_probs"][mask], rtol=0,
                               atol=1e-5)  # fmt: skip
    # the weight sync gives every rank the whole model under HF names, as the HF files hold it
    for rank in (single, first, last):
        assert rank["synced"].keys() == hf.keys()
        assert all(torch.equal(rank["synced"][k], hf[k]) for k in hf)
