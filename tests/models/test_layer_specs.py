"""The backend seam: which spec each platform gets, and the project spec against megatron-core's
local spec (same parameter names, same logits, with and without the dense host mask)."""

import logging

import pytest

from mindspeed_rl.models import layer_specs
from tests.distributed_harness import run_distributed
from tests.models import layer_spec_case


def test_each_platform_gets_its_backend(caplog):
    assert layer_specs.choose_backend("npu", has_transformer_engine=False) == "mindspeed"
    assert layer_specs.choose_backend("npu", has_transformer_engine=True) == "mindspeed"
    assert layer_specs.choose_backend("cuda", has_transformer_engine=True) == "transformer_engine"
    assert layer_specs.choose_backend("cpu", has_transformer_engine=True) == "project"
    with caplog.at_level(logging.WARNING, logger=layer_specs.__name__):
        assert layer_specs.choose_backend("cuda", has_transformer_engine=False) == "project"
    with pytest.raises(ValueError, match="platform='tpu'"):
        layer_specs.choose_backend("tpu", has_transformer_engine=False)


def test_only_megatron_local_and_mindspeed_get_the_dense_mask():
    assert [b for b in layer_specs.BACKENDS if layer_specs.needs_host_mask(b)] == [
        "mindspeed",
        "megatron_local",
    ]


@pytest.mark.slow
@pytest.mark.megatron_smoke
def test_project_spec_equals_megatron_local_spec_and_te_spec_keeps_the_layout():
    result = run_distributed(layer_spec_case.run, 1)[0]
    for name in ("gqa_bias", "qk_norm"):
        case = result[name]
        assert case["same_names"] and not case["missing"], name
        assert case["local_modules_left"] == [], name
        assert case["scale"] > 0.5, "O(1) logits: a wrong attention cannot hide"
        assert case["diff_no_mask"] <= 1e-5, (name, case["diff_no_mask"])
        assert case["diff_mask"] <= 1e-5, (name, case["diff_mask"])
    # packed sequences (THD) through the whole model, ready for sequence packing
    assert result["packed_diff"] <= 1e-5, result["packed_diff"]
    if "missing" in result["te"]:  # megatron-core 0.12.x without transformer-engine
        assert result["te"]["missing"] == "transformer_engine"
        return
    assert result["te"]["layers"] == 2
    assert all(result["te"]["roles"]), result["te"]["roles"]
    assert not any(result["te"]["local_left"])
