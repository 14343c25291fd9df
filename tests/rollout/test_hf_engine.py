"""The Hugging Face rollout engine: greedy equals transformers, log-probs equal a recomputation."""

import pytest
import torch
import transformers

from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
from mindspeed_rl.rollout.sampling import SamplingParams

VOCAB, PAD = 61, 0
PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40]]


@pytest.fixture(scope="module")
def model():
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).eval()


def _recomputed_log_probs(model, prompt, response, temperature):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    t = temperature or 1.0
    return torch.log_softmax(logits / t, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def test_greedy_equals_transformers_generate(model):
    engine = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    out = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=12))
    for i, prompt in enumerate(PROMPTS):
        reference = model.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=12, eos_token_id=VOCAB - 1,
            pad_token_id=PAD,
        )[0, len(prompt):].tolist()  # fmt: skip
        length = int(out.response_lengths[i])
        assert out.responses[i, :length].tolist() == reference[:length]
        assert length == len(reference)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_probs_equal_a_full_forward_recomputation(model, temperature):
    engine = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    params = SamplingParams(n=2, temperature=temperature, max_tokens=10, seed=7)
    out = engine.generate(PROMPTS, params)
    assert out.prompt_index == [0, 0, 1, 1, 2, 2]
    diffs = []
    for row, p in enumerate(out.prompt_index):
        length = int(out.response_lengths[row])
        response = out.responses[row, :length].tolist()
        expected = _recomputed_log_probs(model, PROMPTS[p], response, temperature)
        diffs.append((out.rollout_log_probs[row, :length] - expected).abs())
        assert out.rollout_log_probs[row, length:].abs().sum() == 0
    assert torch.cat(diffs).mean() <= 1e-4 and torch.cat(diffs).max() <= 1e-3


def test_eos_stops_a_row_and_is_part_of_its_response(model):
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    free = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD).generate(
        PROMPTS, greedy
    )
    eos = int(free.responses[0, 2])  # the third greedy token of prompt 0
    engine = HFRolloutEngine(model, eos_token_ids=[eos], pad_token_id=PAD)
    out = engine.generate(PROMPTS, greedy)
    first = free.responses[0].tolist().index(eos) + 1
    assert int(out.response_lengths[0]) == first
    assert out.responses[0, first - 1] == eos and out.finish_reasons[0] == "stop"
    assert out.response_mask[0, first:].sum() == 0
    for row in range(len(PROMPTS)):
        length = int(out.response_lengths[row])
        assert (out.finish_reasons[row] == "stop") == (eos in out.responses[row, :length].tolist())
        if out.finish_reasons[row] == "length":
            assert length == greedy.max_tokens


def test_seeded_sampling_is_reproducible_and_batching_independent(model):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=11)
    engine = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    a, b = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    assert torch.equal(a.responses, b.responses)
    assert len(set(map(tuple, a.responses.tolist()))) > 1


def test_load_weights_updates_values_and_version(model):
    engine = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    name = "model.norm.weight"
    original = dict(model.named_parameters())[name].detach().clone()
    try:
        assert engine.load_weights([(name, torch.full_like(original, 2.0))], version=3) == 1
        assert engine.weight_version == 3
        assert torch.equal(dict(model.named_parameters())[name], torch.full_like(original, 2.0))
        with pytest.raises(KeyError, match="no parameter 'model.nope'"):
            engine.load_weights([("model.nope", original)], version=4)
        with pytest.raises(ValueError, match="engine shape"):
            engine.load_weights([(name, original[:3])], version=4)
    finally:
        engine.load_weights([(name, original)], version=0)


def test_sleep_frees_the_weights_and_a_full_sync_brings_them_back(model):
    engine = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    params = SamplingParams(n=2, max_tokens=5, temperature=0.0)
    expected = engine.generate(PROMPTS, params).responses
    full = engine.resident_bytes()["engine_weights"]
    assert full == sum(v.numel() * v.element_size() for v in weights.values())
    assert engine.resident_bytes()["kv_cache"] > 0  # the last call's cache, while awake

    engine.sleep()
    assert engine.awake == set() and engine.resident_bytes() == {"engine_weights": 0, "kv_cache": 0}
    with pytest.raises(RuntimeError, match="awake"):
        engine.generate(PROMPTS, params)
    engine.wake_up(["weights"])
    assert engine.resident_bytes()["engine_weights"] == full
    # a sync that skips a parameter would leave it holding whatever the allocator gave back
    partial = [(k, v) for k, v in weights.items() if k != "model.norm.weight"]
    with pytest.raises(RuntimeError, match="1 parameter\\(s\\) unset.*model.norm.weight"):
        engine.load_weights(partial, version=1)
    engine.load_weights(weights.items(), version=1)
    engine.wake_up(["kv_cache"])
    assert torch.equal(engine.generate(PROMPTS, params).responses, expected)
    with pytest.raises(ValueError, match="unknown engine memory tags"):
        engine.wake_up(["kv"])


def test_each_row_samples_from_its_own_stream_whatever_the_batching(model):
    """Sample k of prompt i draws from its own seeded stream: the same tokens whether the rows
    are generated in one batch or in chunks of two, and other seeds give other samples."""
    params = SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=11)
    whole = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    chunked = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD, max_num_seqs=2)
    a, b = whole.generate(PROMPTS, params), chunked.generate(PROMPTS, params)
    assert torch.equal(a.responses, b.responses)
    # the same tokens scored in batches of other widths: equal up to float rounding
    assert torch.allclose(a.rollout_log_probs, b.rollout_log_probs, atol=1e-5)
    other = whole.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=12))
    assert not torch.equal(a.responses, other.responses)
    assert not torch.equal(a.responses[0], a.responses[1]), "the two samples of a prompt differ"


def test_the_samples_of_a_prompt_share_one_prefill(model):
    """n samples of a prompt: the prompt goes through the model once (its KV cache repeated for
    its rows), and the samples equal those of a per-row prefill (``max_num_seqs=1``: every row
    prefilled alone) token for token, log-probs within float rounding."""
    params = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=5)
    shared = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD)
    alone = HFRolloutEngine(model, eos_token_ids=[VOCAB - 1], pad_token_id=PAD, max_num_seqs=1)
    prefill_rows = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: prefill_rows.append(kwargs["input_ids"].shape)
        if kwargs["past_key_values"] is None else None, with_kwargs=True,
    )  # fmt: skip
    try:
        a = shared.generate(PROMPTS, params)
        assert prefill_rows == [(len(PROMPTS), max(map(len, PROMPTS)))]  # one row per prompt
        b = alone.generate(PROMPTS, params)
    finally:
        hook.remove()
    assert len(prefill_rows) == 1 + len(PROMPTS) * params.n
    assert torch.equal(a.responses, b.responses) and a.prompt_index == b.prompt_index
    assert torch.allclose(a.rollout_log_probs, b.rollout_log_probs, atol=1e-5)
    assert len(set(map(tuple, a.responses.tolist()))) > len(PROMPTS)  # the samples differ
