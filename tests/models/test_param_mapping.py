"""The HF <-> Megatron mapping on tensors with unique values: every permutation error shows."""

import pytest
import torch

from mindspeed_rl.checkpoint.expert_layout import ExpertShapes, to_sequential
from mindspeed_rl.models.hf_config import model_config_from_hf
from mindspeed_rl.models.param_mapping import (
    DictSource,
    Kind,
    WeightMapping,
    iter_hf_weights,
    iter_mcore_shard,
)
from mindspeed_rl.platform.distributed import ParallelLayout
from tests.models import tiny_hf


def _model(name: str, divisible_by: int = 16, hf: dict | None = None, **update):
    info = model_config_from_hf(
        tiny_hf.hf_config(name, **(hf or {})).to_dict(), make_vocab_size_divisible_by=divisible_by
    )
    return info.model.model_copy(update=update), info.vocab_size


def _unique_hf_tensors(mapping: WeightMapping) -> dict[str, torch.Tensor]:
    """Every HF tensor filled with values no other tensor (or position) has."""
    tensors, offset = {}, 0
    for name, shape in sorted(mapping.hf_shapes().items()):
        numel = torch.Size(shape).numel()
        tensors[name] = torch.arange(offset, offset + numel, dtype=torch.float64).reshape(shape)
        offset += numel
    return tensors


def _round_trip(mapping: WeightMapping, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    source, out = DictSource(hf), {}
    for pp in range(mapping.pp):
        for ep in range(mapping.ep):
            shards = [
                dict(iter_mcore_shard(mapping, source, tp, pp, ep)) for tp in range(mapping.tp)
            ]
            for name, tensor in iter_hf_weights(mapping, shards, pp, ep):
                if name in out:  # replicated over EP ranks: must agree
                    assert torch.equal(out[name], tensor), name
                out[name] = tensor
    return out


CASES = [
    ("qwen2", ParallelLayout(2, 1, 1), {}),
    ("qwen2_tied", ParallelLayout(2, 2, 1), {}),
    ("qwen3", ParallelLayout(2, 2, 1), {}),
    ("qwen3_moe", ParallelLayout(2, 2, 2), {}),
    ("qwen3_moe", ParallelLayout(2, 1, 4), {"moe_grouped_gemm": True}),
    ("llama", ParallelLayout(1, 4, 1), {}),
    ("qwen3_moe", ParallelLayout(2, 1, 2, moe_tp_extend_ep=True), {}),
    ("qwen3_moe", ParallelLayout(2, 2, 1, moe_tp_extend_ep=True), {"moe_grouped_gemm": True}),
]


@pytest.mark.parametrize("name,layout,update", CASES)
def test_hf_to_mcore_to_hf_restores_every_tensor(name, layout, update):
    model, vocab = _model(name, **update)
    mapping = WeightMapping(model, vocab, layout)
    hf = _unique_hf_tensors(mapping)
    back = _round_trip(mapping, hf)
    assert back.keys() == hf.keys()
    for key in hf:
        assert torch.equal(back[key], hf[key]), key


def test_tp2_shards_merge_to_the_tp1_shard():
    model, vocab = _model("qwen3_moe")
    one = WeightMapping(model, vocab, ParallelLayout(1, 1, 1))
    two = WeightMapping(model, vocab, ParallelLayout(2, 1, 1))
    source = DictSource(_unique_hf_tensors(one))
    full = dict(iter_mcore_shard(one, source))
    shards = [dict(iter_mcore_shard(two, source, tp_rank=r)) for r in range(2)]
    assert shards[0].keys() == full.keys()
    for param in two.params():
        a, b = shards[0][param.name], shards[1][param.name]
        if param.kind is Kind.REPLICATED:
            merged = a
            assert torch.equal(a, b)
        elif param.kind is Kind.ROW:
            merged = torch.cat([a, b], dim=1)
        elif param.kind is Kind.GATE_UP:  # [gate_r; up_r] per rank
            (g0, u0), (g1, u1) = a.chunk(2), b.chunk(2)
            merged = torch.cat([g0, g1, u0, u1])
        else:  # QKV (whole groups per rank), VOCAB
            merged = torch.cat([a, b])
        assert torch.equal(merged, full[param.name]), param.name


def test_qkv_shard_of_tp_rank_1_by_hand():
    # 4 heads, 2 groups, head_dim 8 -> TP rank 1 holds group 1: q heads 2, 3, k head 1, v head 1
    model, vocab = _model("qwen2")
    mapping = WeightMapping(model, vocab, ParallelLayout(2, 1, 1))
    hf = _unique_hf_tensors(mapping)
    param = next(p for p in mapping.params() if p.name.endswith("0.self_attention.linear_qkv.bias"))
    shard = mapping.shard(param, DictSource(hf), tp_rank=1)
    q, k, v = (hf[f"model.layers.0.self_attn.{p}_proj.bias"] for p in "qkv")
    assert torch.equal(shard, torch.cat([q[16:32], k[8:16], v[8:16]]))


def test_vocab_is_padded_with_zero_rows_and_cut_back():
    model, vocab = _model("qwen2", divisible_by=16)  # 150 -> 160 rows
    mapping = WeightMapping(model, vocab, ParallelLayout(2, 1, 1))
    hf = _unique_hf_tensors(mapping)
    emb = mapping.params()[0]
    assert emb.name == "embedding.word_embeddings.weight"
    shards = [mapping.shard(emb, DictSource(hf), r) for r in range(2)]
    assert [s.shape[0] for s in shards] == [80, 80]
    assert torch.equal(shards[1][:70], hf["model.embed_tokens.weight"][80:])
    assert not shards[1][70:].any()
    ((name, merged),) = mapping.merge(emb, shards)
    assert name == "model.embed_tokens.weight" and torch.equal(merged, hf[name])


def test_tied_output_layer_exists_only_on_a_last_stage_without_the_embedding():
    model, vocab = _model("qwen2_tied")
    one_stage = WeightMapping(model, vocab, ParallelLayout(1, 1, 1))
    assert "output_layer.weight" not in {p.name for p in one_stage.params()}
    two_stages = WeightMapping(model, vocab, ParallelLayout(1, 2, 1))
    last = {p.name: p for p in two_stages.params(pp_rank=1)}
    assert last["output_layer.weight"].hf == ("model.embed_tokens.weight",)
    assert "embedding.word_embeddings.weight" not in last
    assert "decoder.layers.0.input_layernorm.weight" in last  # layer 1 is local layer 0
    assert last["decoder.layers.0.input_layernorm.weight"].hf[0].startswith("model.layers.1.")


def test_grouped_experts_rewrite_to_sequential_shards():
    model, vocab = _model("qwen3_moe")
    layout = ParallelLayout(2, 1, 2)
    grouped = WeightMapping(model, vocab, layout, grouped_experts=True)
    sequential = WeightMapping(model, vocab, layout, grouped_experts=False)
    source = DictSource(_unique_hf_tensors(grouped))
    for ep in range(2):
        for tp in range(2):
            g = dict(iter_mcore_shard(grouped, source, tp, 0, ep))
            s = dict(iter_mcore_shard(sequential, source, tp, 0, ep))
            rewritten = to_sequential(g, ExpertShapes.from_model(model, tp=2, ep=2))
            assert rewritten.keys() == s.keys()
            assert all(torch.equal(rewritten[k], s[k]) for k in s)


def test_expert_ranges_and_local_numbering():
    model, vocab = _model("qwen3_moe")
    mapping = WeightMapping(model, vocab, ParallelLayout(1, 1, 2))
    assert list(mapping.expert_range(1)) == [2, 3]
    names = {p.name: p.hf for p in mapping.params(ep_rank=1)}
    local = names["decoder.layers.1.mlp.experts.local_experts.0.linear_fc1.weight"]
    assert local == (
        "model.layers.1.mlp.experts.2.gate_proj.weight",
        "model.layers.1.mlp.experts.2.up_proj.weight",
    )


@pytest.mark.parametrize(
    "name,layout,message",
    [
        ("qwen2", ParallelLayout(4, 1, 1), "valid TP sizes: [1, 2]"),
        ("llama", ParallelLayout(1, 3, 1), "valid PP sizes: [1, 2, 4]"),
        ("qwen3_moe", ParallelLayout(1, 1, 3), "valid EP sizes: [1, 2, 4]"),
        ("qwen3", ParallelLayout(1, 1, 2), "needs a MoE model"),
    ],
)
def test_layouts_that_do_not_divide_are_rejected_with_the_valid_choices(name, layout, message):
    model, vocab = _model(name)
    with pytest.raises(ValueError) as err:
        WeightMapping(model, vocab, layout)
    assert message in str(err.value)


def test_padded_vocab_must_cover_vocab_and_divide_by_tp():
    model, vocab = _model("qwen2", padded_vocab_size=149)
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        WeightMapping(model, vocab)
    model, vocab = _model("qwen2", padded_vocab_size=151)
    with pytest.raises(ValueError, match="not divisible by tensor parallel size 2"):
        WeightMapping(model, vocab, ParallelLayout(2, 1, 1))


EXTEND = ParallelLayout(2, 1, 2, moe_tp_extend_ep=True)
EIGHT_EXPERTS = {"num_experts": 8}


def test_moe_tp_extend_ep_places_whole_experts_as_mindspeed_llm_writes_them():
    """The shard (tp t, ep e) holds experts [(e * TP + t) * n, ...) with n = E / (TP * EP), each
    whole. Reference built here from HF tensors the way MindSpeed-LLM's convert_hf2mg.py
    (master, set_model_layer_mlp with moe_tp_extend_ep) does: every expert's [gate; up].T
    concatenated into [E, H, 2F], chunked into TP * EP pieces, piece e * TP + t to that shard."""
    model, vocab = _model("qwen3_moe", hf=EIGHT_EXPERTS, moe_grouped_gemm=True)
    mapping = WeightMapping(model, vocab, EXTEND)
    assert (mapping.expert_tp, mapping.expert_ep) == (1, 4)
    hf = _unique_hf_tensors(mapping)
    h, x = model.hidden_size, "model.layers.1.mlp.experts."
    fc1 = torch.stack(
        [
            torch.cat([hf[f"{x}{e}.gate_proj.weight"], hf[f"{x}{e}.up_proj.weight"]]).t()
            for e in range(8)
        ]
    )  # [E, H, 2F]
    fc2 = torch.stack([hf[f"{x}{e}.down_proj.weight"].t() for e in range(8)])  # [E, F, H]
    fc1_pieces, fc2_pieces = fc1.chunk(4), fc2.chunk(4)
    for ep in range(2):
        for tp in range(2):
            assert list(mapping.expert_range(ep, tp)) == [2 * (2 * ep + tp), 2 * (2 * ep + tp) + 1]
            shard = dict(iter_mcore_shard(mapping, DictSource(hf), tp, 0, ep))
            piece = 2 * ep + tp
            assert torch.equal(
                shard["decoder.layers.1.mlp.experts.weight1"], fc1_pieces[piece].reshape(h, -1)
            )
            assert torch.equal(
                shard["decoder.layers.1.mlp.experts.weight2"], fc2_pieces[piece].reshape(-1, h)
            )
            # dense weights are split over TP as in the default layout
            default = WeightMapping(model, vocab, ParallelLayout(2, 1, 2))
            dense = dict(iter_mcore_shard(default, DictSource(hf), tp, 0, ep))
            for name, tensor in shard.items():
                if ".mlp.experts." not in name:
                    assert torch.equal(tensor, dense[name]), name
                else:  # same shapes as the default layout's shard: only a record tells them apart
                    assert tensor.shape == dense[name].shape, name


def test_moe_tp_extend_ep_per_expert_shards_hold_whole_experts():
    model, vocab = _model("qwen3_moe", hf=EIGHT_EXPERTS)
    mapping = WeightMapping(model, vocab, EXTEND)
    hf = _unique_hf_tensors(mapping)
    shard = dict(iter_mcore_shard(mapping, DictSource(hf), 1, 0, 1))  # tp 1, ep 1: experts 6, 7
    local = "decoder.layers.0.mlp.experts.local_experts."
    assert {n for n in shard if n.startswith(local)} == {
        f"{local}{e}.linear_fc{f}.weight" for e in range(2) for f in (1, 2)
    }
    x = "model.layers.0.mlp.experts.7."
    assert torch.equal(
        shard[f"{local}1.linear_fc1.weight"],
        torch.cat([hf[x + "gate_proj.weight"], hf[x + "up_proj.weight"]]),
    )
    assert torch.equal(shard[f"{local}1.linear_fc2.weight"], hf[x + "down_proj.weight"])


def test_moe_tp_extend_ep_hf_order_takes_each_expert_set_from_its_one_shard():
    model, vocab = _model("qwen3_moe", hf=EIGHT_EXPERTS, moe_grouped_gemm=True)
    order = WeightMapping(model, vocab, EXTEND).hf_order(0)
    layer = order[1]
    experts = [(p.hf[0], holders) for p, holders in layer if p.kind is Kind.GROUPED_FC2]
    assert experts == [
        ("model.layers.0.mlp.experts.0.down_proj.weight", [(0, 0)]),
        ("model.layers.0.mlp.experts.2.down_proj.weight", [(1, 0)]),
        ("model.layers.0.mlp.experts.4.down_proj.weight", [(0, 1)]),
        ("model.layers.0.mlp.experts.6.down_proj.weight", [(1, 1)]),
    ]
    qkv = next(holders for p, holders in layer if p.kind is Kind.QKV)
    assert qkv == [(0, 0), (1, 0)]


@pytest.mark.parametrize(
    "name,layout,message",
    [
        (
            "qwen3_moe",
            ParallelLayout(2, 1, 4, moe_tp_extend_ep=True),
            "valid EP sizes at TP 2: [1, 2]",
        ),
        ("qwen3", ParallelLayout(2, 1, 1, moe_tp_extend_ep=True), "moe_tp_extend_ep needs a MoE"),
    ],
)
def test_moe_tp_extend_ep_layouts_that_do_not_fit_are_rejected(name, layout, message):
    model, vocab = _model(name)
    with pytest.raises(ValueError) as err:
        WeightMapping(model, vocab, layout)
    assert message in str(err.value)
