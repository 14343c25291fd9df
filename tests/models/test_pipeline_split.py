"""The layers-per-stage rules of ``num_layer_list`` and what megatron-core is asked to build.

megatron-core 0.16.1 (``transformer/pipeline_parallel_layer_layout.py``) takes any split as
``pipeline_model_parallel_layout``; 0.12.3 (``transformer/transformer_block.py``
``get_num_layers_to_build``) only ``num_layers_in_first/last_pipeline_stage`` with even middle
stages, other splits through a scoped override of its layer count and offset during the build. tests/workers/test_uneven_pipeline.py builds both for real.
"""

from __future__ import annotations

import pytest

from mindspeed_rl.models import pipeline_split as ps


def test_the_suites_spellings_parse():
    assert ps.parse_num_layer_list("16,17,16,15") == (16, 17, 16, 15)
    assert ps.parse_num_layer_list(" 1, 3") == (1, 3)
    assert ps.parse_num_layer_list([7, 9]) == (7, 9)
    assert ps.parse_num_layer_list(64) == (64,)
    assert ps.parse_num_layer_list(None) is None and ps.parse_num_layer_list("") is None
    with pytest.raises(ValueError, match="comma-separated list of layer counts"):
        ps.parse_num_layer_list("16;17")


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ((16, 17, 16), "3 stages listed but pipeline_model_parallel_size is 4"),
        ((16, 17, 16, 16), "sums to 65, the model has num_layers = 64"),
        ((0, 32, 16, 16), "every stage needs at least one layer"),
    ],
)
def test_a_split_that_does_not_fit_is_named(layers, message):
    assert message in ps.split_problem(64, 4, layers)


def test_an_even_split_needs_no_list_and_an_odd_one_gets_an_example():
    assert ps.split_problem(64, 4, None) is None
    problem = ps.split_problem(10, 4, None)
    assert "valid PP sizes: [1, 2, 5, 10]" in problem and "'3,3,2,2'" in problem


def test_stage_ranges_are_consecutive():
    ranges = [ps.stage_range(64, 4, (16, 17, 16, 15), r) for r in range(4)]
    assert [(r.start, r.stop) for r in ranges] == [(0, 16), (16, 33), (33, 49), (49, 64)]
    assert ps.stage_range(8, 2, None, 1) == range(4, 8)


def test_megatron_016_gets_a_layout_with_embedding_and_loss():
    fields = ps.megatron_fields((1, 3), (0, 16))
    assert fields == {
        "pipeline_model_parallel_layout": [["embedding", "decoder"], ["decoder"] * 3 + ["loss"]]
    }
    assert ps.megatron_fields((16, 16), (0, 16)) == {} and ps.megatron_fields(None, (0, 12)) == {}


def test_megatron_012_gets_first_and_last_stage_sizes_or_a_scoped_build_override():
    assert ps.megatron_fields((1, 3), (0, 12)) == {"num_layers_in_first_pipeline_stage": 1}
    assert ps.megatron_fields((7, 8, 8, 9), (0, 12)) == {
        "num_layers_in_first_pipeline_stage": 7,
        "num_layers_in_last_pipeline_stage": 9,
    }
    assert ps.megatron_fields((8, 8, 8, 9), (0, 12)) == {"num_layers_in_last_pipeline_stage": 9}
    assert not ps.needs_build_override((7, 8, 8, 9), (0, 12))
    # middle stages that differ: no 0.12 option; the build answers from the split instead
    assert ps.megatron_fields((16, 17, 16, 15), (0, 12)) == {}
    assert ps.needs_build_override((16, 17, 16, 15), (0, 12))
    assert not ps.needs_build_override((16, 17, 16, 15), (0, 16))
    assert not ps.needs_build_override(None, (0, 12))
