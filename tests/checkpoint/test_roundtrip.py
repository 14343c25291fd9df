"""hf -> mg -> hf through cli/convert_ckpt.py: bit-identical tensors that transformers loads."""

import json
import os

import pytest
import torch

from cli.convert_ckpt import main
from mindspeed_rl.checkpoint import mcore_layout
from tests.checkpoint.conftest import read_safetensors

LAYOUTS = {
    "qwen2": [(1, 1, 1), (2, 1, 1), (1, 2, 1)],
    "qwen2_tied": [(2, 2, 1)],
    "qwen3": [(2, 1, 1), (1, 2, 1)],
    "qwen3_moe": [(2, 2, 2), (1, 1, 2)],
    "llama": [(2, 2, 1)],
}
CASES = [(name, layout) for name, layouts in LAYOUTS.items() for layout in layouts]


def hf_to_mg(hf_dir, out, layout, *extra) -> int:
    tp, pp, ep = layout
    return main(
        [
            "--use-mcore-models", "--model-type", "GPT", "--load-model-type", "hf",
            "--save-model-type", "mg", "--load-dir", str(hf_dir), "--save-dir", str(out),
            "--target-tensor-parallel-size", str(tp), "--target-pipeline-parallel-size", str(pp),
            "--target-expert-parallel-size", str(ep), "--make-vocab-size-divisible-by", "16",
            *extra,
        ]
    )  # fmt: skip


def mg_to_hf(mg_dir, out, *extra) -> int:
    return main(
        [
            "--use-mcore-models", "--model-type", "GPT", "--load-model-type", "mg",
            "--save-model-type", "hf", "--load-dir", str(mg_dir), "--save-dir", str(out), *extra,
        ]
    )  # fmt: skip


@pytest.mark.parametrize("name,layout", CASES)
def test_hf_mg_hf_is_bit_identical(tiny_models, tmp_path, name, layout):
    grouped = ["--moe-grouped-gemm"] if layout == (2, 2, 2) else []
    assert hf_to_mg(tiny_models[name], tmp_path / "mg", layout, *grouped) == 0
    files = mcore_layout.find_checkpoint(tmp_path / "mg")
    assert files.iteration == "release"
    assert files.layout == mcore_layout.ShardLayout(*layout)
    assert mg_to_hf(tmp_path / "mg", tmp_path / "hf", "--max-shard-size", "30KB") == 0
    original, restored = read_safetensors(tiny_models[name]), read_safetensors(tmp_path / "hf")
    assert restored.keys() == original.keys()
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype and torch.equal(restored[key], tensor), key
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original)
    assert len(set(index["weight_map"].values())) > 1  # several shards
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config == json.loads((tiny_models[name] / "config.json").read_text())


def test_tied_checkpoint_has_no_lm_head_and_transformers_loads_the_result(tiny_models, tmp_path):
    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer

    source = tiny_models["qwen2_tied"]
    assert "lm_head.weight" not in read_safetensors(source)
    tokenizer = build_toy_tokenizer(tmp_path / "tok")
    assert hf_to_mg(source, tmp_path / "mg", (1, 2, 1)) == 0
    assert mg_to_hf(tmp_path / "mg", tmp_path / "hf", "--tokenizer-model", str(tokenizer)) == 0
    assert "lm_head.weight" not in read_safetensors(tmp_path / "hf")

    import transformers

    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    reference = transformers.AutoModelForCausalLM.from_pretrained(source)
    tokens = torch.tensor([[3, 17, 42, 99, 149]])
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, reference(tokens).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.decode(tok.encode("Answer: 42")) == "Answer: 42"


def test_tp2_and_tp1_conversions_agree_bitwise_once_merged(tiny_models, tmp_path):
    from mindspeed_rl.checkpoint.mcore_to_hf import load_stage, plan_mcore_to_hf

    source = tiny_models["qwen3"]
    assert hf_to_mg(source, tmp_path / "tp1", (1, 1, 1)) == 0
    assert hf_to_mg(source, tmp_path / "tp2", (2, 1, 1)) == 0
    one = load_stage(plan_mcore_to_hf(tmp_path / "tp1"), 0)[0, 0]
    plan = plan_mcore_to_hf(tmp_path / "tp2")
    two = load_stage(plan, 0)
    assert set(two[0, 0]) == set(one)
    for param in plan.mapping.params():
        a, b = two[0, 0][param.name], two[1, 0][param.name]
        kind = param.kind.value
        if kind == "replicated":
            assert torch.equal(a, b)
            merged = a
        elif kind == "row":
            merged = torch.cat([a, b], dim=1)
        elif kind == "gate_up":
            merged = torch.cat([a.chunk(2)[0], b.chunk(2)[0], a.chunk(2)[1], b.chunk(2)[1]])
        else:  # qkv: whole query groups per rank; vocab: rows
            merged = torch.cat([a, b])
        assert torch.equal(merged, one[param.name]), param.name


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="os.copy_file_range needs Linux")
@pytest.mark.parametrize("name,tp", [("qwen2", 2), ("qwen2", 1), ("qwen3_moe", 2)])
def test_only_row_parallel_weights_pass_through_the_process(tiny_models, tmp_path, name, tp):
    """Every other byte lies in an input as it is and is copied file to file by the kernel
    (what the conversion's speed rests on: benchmarks/bench_convert.py)."""
    from mindspeed_rl.checkpoint.hf_to_mcore import HfToMcoreOptions, convert_hf_to_mcore
    from mindspeed_rl.checkpoint.mcore_to_hf import (
        McoreToHfOptions,
        convert_mcore_to_hf,
        plan_mcore_to_hf,
    )

    layout = mcore_layout.ShardLayout(tp, 1, 2 if name == "qwen3_moe" else 1)
    to_mg = convert_hf_to_mcore(HfToMcoreOptions(tiny_models[name], tmp_path / "mg", layout))
    to_hf = convert_mcore_to_hf(McoreToHfOptions(tmp_path / "mg", tmp_path / "hf"))
    mapping = plan_mcore_to_hf(tmp_path / "mg").mapping
    shapes = mapping.hf_shapes()
    # one copy per EP rank on the Megatron side (non-expert weights are replicated), one in HF
    rows = [
        p.hf[0] for e in range(layout.ep) for p in mapping.params(0, e) if p.kind.value == "row"
    ]
    rows = rows if tp > 1 else []  # at TP 1 a row-parallel weight lies in the input as it is
    nbytes = {n: torch.Size(shapes[n]).numel() * 2 for n in rows}  # bf16
    assert mapping.padded_vocab_size == mapping.vocab_size  # no padding rows to write
    assert to_mg.kernel_bytes == to_mg.bytes - sum(nbytes[n] for n in rows)
    assert to_hf.kernel_bytes == to_hf.bytes - sum(nbytes.values())
    assert to_mg.kernel_bytes > 0 and to_hf.kernel_bytes > 0
