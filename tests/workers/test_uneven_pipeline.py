"""``num_layer_list``: a 5-layer model split unevenly over pipeline stages scores like one stage.

The tiny Llama is converted by the real converter at PP 1, at PP 2 with ``--num-layer-list 2,3``
and at PP 4 with ``1,1,2,1``; an actor built in each split loads its shards, scores the same
mini-batch and syncs its weights out. megatron-core builds ``2,3`` and ``1,1,2,1`` with
``pipeline_model_parallel_layout`` on 0.16.1 (``transformer/pipeline_parallel_layer_layout.py``);
on 0.12.3 ``2,3`` with ``num_layers_in_first_pipeline_stage``
(``transformer/transformer_block.py::get_num_layers_to_build``) and ``1,1,2,1``, which no 0.12
option expresses, through ``pipeline_split.building``'s scoped layer count and offset.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
from mindspeed_rl.checkpoint.mcore_to_hf import McoreToHfOptions, convert_mcore_to_hf
from mindspeed_rl.models import pipeline_split
from tests.distributed_harness import run_distributed
from tests.models import tiny_hf
from tests.workers import uneven_pipeline_case

pytestmark = [pytest.mark.slow, pytest.mark.megatron_smoke]
LAYERS = 5


def _hf_tensors(directory) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _convert(hf_dir, out, layout) -> str:
    convert_hf_to_mcore(HfToMcoreOptions(hf_dir, out, layout, make_vocab_size_divisible_by=16))
    return str(out)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The 5-layer model, its HF tensors and the PP 1 actor's results."""
    import transformers

    root = tmp_path_factory.mktemp("uneven")
    config = tiny_hf.hf_config("llama")
    config.num_hidden_layers = LAYERS
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_config(config)
    tiny_hf.randomize_(model, 3)
    model.save_pretrained(root / "hf")
    one = _convert(root / "hf", root / "pp1", mcore_layout.ShardLayout())
    (result,) = run_distributed(uneven_pipeline_case.run, 1, one, 0)
    assert result["numbers"] == list(range(1, LAYERS + 1))
    return root, _hf_tensors(root / "hf"), result


def _check_split(single, split: tuple[int, ...], run_index: int) -> None:
    root, hf, reference = single
    name = "pp" + "_".join(map(str, split))
    layout = mcore_layout.ShardLayout(pp=len(split), pipeline_layers=split)
    uneven = _convert(root / "hf", root / name, layout)
    # the split is recorded with the shards and read back
    assert mcore_layout.find_checkpoint(uneven).layout.pipeline_layers == split
    ranks = run_distributed(uneven_pipeline_case.run, len(split), uneven, run_index)
    assert [n for rank in ranks for n in rank["layers"]] == list(split)
    assert [n for rank in ranks for n in rank["numbers"]] == list(range(1, LAYERS + 1))
    assert all(rank["log_probs"] is None for rank in ranks[:-1])
    mask = reference["mask"]
    assert reference["log_probs"][mask].abs().min() > 0.1  # real, varied log-probs
    torch.testing.assert_close(ranks[-1]["log_probs"][mask], reference["log_probs"][mask],
                               rtol=0, atol=1e-5)  # fmt: skip
    # the weight sync gives every rank the whole model under HF names, as the HF files hold it
    for rank in (reference, *ranks):
        assert rank["synced"].keys() == hf.keys()
        assert all(torch.equal(rank["synced"][k], hf[k]) for k in hf)


def test_a_two_plus_three_split_scores_syncs_and_converts_back_like_one_stage(single):
    _check_split(single, (2, 3), 1)
    root, hf, _ = single
    back = root / "back"
    convert_mcore_to_hf(McoreToHfOptions(load_dir=root / "pp2_3", save_dir=back))
    assert all(torch.equal(t, hf[name]) for name, t in _hf_tensors(back).items())


def _megatron_version() -> tuple[int, int]:
    from importlib import metadata

    major, minor = metadata.version("megatron-core").split(".")[:2]
    return int(major), int(minor)


@pytest.mark.skipif(
    pipeline_split.has_pipeline_layout(_megatron_version()),
    reason="4 ranks; on megatron-core >= 0.13 this split takes the layout path the 2,3 split "
    "already runs (the scoped build override it checks is for 0.12)",
)
def test_a_split_of_the_middle_stages_scores_and_syncs_like_one_stage(single):
    _check_split(single, (1, 1, 2, 1), 2)
