"""Partial rollout's buffer with the real HF engine: a sample continued over rounds under changing
weights keeps each token's original log-prob and weight version; rounds cap, stop and finish as
docs/partial_rollout.md says; the buffer's state round-trips through a weights_only checkpoint."""

import pytest
import torch
import transformers

from mindspeed_rl.rollout.base import RoundShape
from mindspeed_rl.rollout.hf_engine import HFRolloutEngine
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.trainer.rollout_buffer import PartialRolloutBuffer, policy_age_metrics

VOCAB, PAD = 61, 0
EOS = VOCAB + 1  # never sampled: every sample runs to its round caps and is continued
PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40]]
MAX_TOKENS, SPLIT, N = 12, 3, 2


def _model(seed: int):
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(config).eval()


def _recomputed(model, context, tokens):
    ids = torch.tensor([context + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(context) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


@pytest.fixture(scope="module")
def models():
    """Three weight versions (one per round)."""
    return [_model(seed) for seed in range(3)]


def test_continued_samples_keep_each_tokens_log_prob_and_version(models):
    buffer = PartialRolloutBuffer(SPLIT, MAX_TOKENS, N, [EOS])
    buffer.admit(PROMPTS, ["a", "b", "c"], [0, 1, 2], version=0)
    params = SamplingParams(n=N, max_tokens=MAX_TOKENS, temperature=1.0, seed=3)
    pieces: list[list[tuple[int, list[int], list[int]]]] = [[] for _ in range(len(PROMPTS) * N)]
    for version, model in enumerate(models):
        engine = HFRolloutEngine(model, eos_token_ids=[EOS], pad_token_id=PAD)
        request = buffer.round_request()
        assert max(request.shape.max_tokens) <= 4  # ceil(12 / 3) per round
        out = engine.generate(request.contexts, params, request.shape)
        for row, (g, k) in enumerate(request.slots):
            length = int(out.response_lengths[row])
            before = len(buffer.groups[g].samples[k].tokens)
            pieces[g * N + k].append(
                (version, before, out.rollout_log_probs[row, :length].tolist())
            )
        buffer.absorb(request, out, version)
    assert all(g.complete for g in buffer.groups)  # 3 rounds of 4 tokens: all at the cap
    batch = PartialRolloutBuffer.batch_of(buffer.groups, pad_token_id=PAD, max_prompt_length=8,
                                          max_tokens=MAX_TOKENS)  # fmt: skip
    for row, sample_pieces in enumerate(pieces):
        g = row // N
        tokens = batch["responses"][row].tolist()
        assert len(sample_pieces) == SPLIT and batch["response_mask"][row].sum() == MAX_TOKENS
        for version, start, engine_lp in sample_pieces:
            end = start + len(engine_lp)
            # the batch holds what the engine gave, token by token, and the version
            assert batch["rollout_log_probs"][row, start:end].tolist() == engine_lp
            assert batch["rollout_versions"][row, start:end].tolist() == [version] * len(engine_lp)
            # an independent recomputation: the weights of that version, the context so far
            expected = _recomputed(models[version], PROMPTS[g] + tokens[:start], tokens[start:end])
            torch.testing.assert_close(torch.tensor(engine_lp), expected, atol=1e-5, rtol=0)
            if version < len(models) - 1:  # the newest weights give other values: kept, not redone
                newest = _recomputed(models[-1], PROMPTS[g] + tokens[:start], tokens[start:end])
                assert (newest - expected).abs().max() > 1e-2
    age = policy_age_metrics(batch["rollout_versions"], batch["response_mask"], actor_version=2)
    assert age == {"partial_rollout/age_max": 2.0, "partial_rollout/age_mean": pytest.approx(1.0)}


def test_a_last_round_gives_all_remaining_tokens_and_the_threshold_waits_for_it(models):
    engine = HFRolloutEngine(models[0], eos_token_ids=[EOS], pad_token_id=PAD)
    params = SamplingParams(n=1, max_tokens=MAX_TOKENS, seed=1)
    shape = RoundShape([1, 4, 1], [2, 12, 9], [False, False, True], finish_share=0.15)
    out = engine.generate(PROMPTS, params, shape)
    lengths = out.response_lengths.tolist()
    # the share (1 of 6 rows) is reached at step 2, but the must-finish row runs to its cap
    assert lengths[0] == 2 and lengths[-1] == 9 and all(length == 9 for length in lengths[1:5])
    whole = engine.generate(PROMPTS, params, RoundShape([1, 4, 1], [2, 12, 9], [False] * 3))
    assert whole.response_lengths.tolist() == [2, 12, 12, 12, 12, 9]
    # a cut row's tokens are those of the uncut run: same streams
    assert torch.equal(out.responses[1, :9], whole.responses[1, :9])


def test_buffer_state_round_trips_through_a_weights_only_checkpoint(models, tmp_path):
    buffer = PartialRolloutBuffer(SPLIT, MAX_TOKENS, N, [EOS])
    buffer.admit(PROMPTS, ["a", "b", "c"], [0, 1, 2], version=4)
    engine = HFRolloutEngine(models[0], eos_token_ids=[EOS], pad_token_id=PAD)
    request = buffer.round_request()
    buffer.absorb(request, engine.generate(request.contexts, SamplingParams(n=N, max_tokens=12,
                                                                             seed=0), request.shape), 4)  # fmt: skip
    torch.save(buffer.state_dict(), tmp_path / "state.pt")
    loaded = PartialRolloutBuffer(SPLIT, MAX_TOKENS, N, [EOS])
    loaded.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert loaded.groups == buffer.groups and loaded.round_request() == buffer.round_request()


def test_a_round_that_no_response_outgrows_gives_the_plain_calls_batch(models):
    """With a round cap no response reaches, partial rollout's batch equals, tensor for tensor,
    the batch the trainer builds from a plain generate call: the same tokens, log-probs, masks
    (the new prompts of a round draw what a whole call draws)."""
    from mindspeed_rl.trainer import batch as batch_ops

    eos = list(range(20, 45))  # a third of the vocabulary ends a response: short responses
    engine = HFRolloutEngine(models[0], eos_token_ids=eos, pad_token_id=PAD)
    params = SamplingParams(n=4, max_tokens=24, temperature=1.0, seed=7)
    plain = engine.generate(PROMPTS, params)
    assert int(plain.response_lengths.max()) <= 12  # the precondition: ceil(24 / 2) suffices
    buffer = PartialRolloutBuffer(2, 24, 4, eos)
    buffer.admit(PROMPTS, ["a", "b", "c"], [0, 1, 2], version=0)
    request = buffer.round_request()
    buffer.absorb(request, engine.generate(request.contexts, params, request.shape), 0)
    taken, _ = buffer.pop_complete()
    assert len(taken) == 3 and not buffer.groups
    ours = PartialRolloutBuffer.batch_of(taken, pad_token_id=PAD, max_prompt_length=8,
                                         max_tokens=24)  # fmt: skip
    expected = batch_ops.generation_batch(
        PROMPTS, ["a", "b", "c"], [g.uid for g in taken], plain, pad_token_id=PAD,
        max_prompt_length=8, max_response_length=24,
    )  # fmt: skip
    for key in ("prompts", "responses", "response_mask", "attention_mask", "rollout_log_probs"):
        assert torch.equal(ours[key], expected[key]), key
    assert ours.get("uid").tolist() == expected.get("uid").tolist()
    assert not bool(ours["rollout_versions"].any())  # all of version 0
