"""Sampling semantics against hand-computed target distributions (chi-square at a fixed seed)."""

import math

import pytest
import torch

from mindspeed_rl.rollout.sampling import SamplingParams, sample_next, truncated_logits

PROBS = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
LOGITS = torch.tensor(PROBS).log()
DRAWS = 40_000
# chi-square critical values at alpha = 0.001 by degrees of freedom
CHI2_CRIT = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}


def _normalised(weights):
    total = sum(weights)
    return [w / total for w in weights] + [0.0] * (len(PROBS) - len(weights))


# (params, target distribution computed by hand)
CASES = [
    (SamplingParams(temperature=1.0), PROBS),
    (SamplingParams(temperature=0.5), _normalised([p * p for p in PROBS])),
    (SamplingParams(temperature=2.0), _normalised([math.sqrt(p) for p in PROBS])),
    (SamplingParams(top_k=3), _normalised(PROBS[:3])),
    # mass before each token: 0, .4, .65 -> with top_p .6 the third token is dropped
    (SamplingParams(top_p=0.6), _normalised(PROBS[:2])),
    # threshold .2 x .4 = .08 keeps the first four tokens
    (SamplingParams(min_p=0.2), _normalised(PROBS[:4])),
    # top_k 4 then top_p .7 over the renormalised four (.4,.25,.15,.1)/.9: before = 0,.44,.72
    (SamplingParams(top_k=4, top_p=0.7), _normalised(PROBS[:2])),
]


@pytest.mark.parametrize(("params", "target"), CASES)
def test_empirical_frequencies_match_the_target(params, target):
    generator = torch.Generator().manual_seed(1234)
    tokens, _ = sample_next(LOGITS.expand(DRAWS, -1), params, generator)
    counts = torch.bincount(tokens, minlength=len(PROBS)).tolist()
    support = [i for i, t in enumerate(target) if t > 0]
    assert all(counts[i] == 0 for i in range(len(PROBS)) if target[i] == 0), counts
    chi2 = sum((counts[i] - DRAWS * target[i]) ** 2 / (DRAWS * target[i]) for i in support)
    assert chi2 < CHI2_CRIT[len(support) - 1], (counts, chi2)


def test_greedy_modes_pick_the_argmax_and_report_tempered_log_probs():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    for params in (SamplingParams(temperature=0.0), SamplingParams(top_k=1, temperature=0.7)):
        tokens, lp = sample_next(logits, params, torch.Generator().manual_seed(0))
        assert torch.equal(tokens, logits.argmax(-1))
        t = params.temperature or 1.0
        expected = torch.log_softmax(logits / t, -1).gather(-1, tokens[:, None]).squeeze(-1)
        torch.testing.assert_close(lp, expected, rtol=0, atol=0)


def test_log_probs_ignore_truncation():
    """The trainer cannot see top-p: the engine reports log_softmax(logits / T) of the token."""
    params = SamplingParams(temperature=0.7, top_p=0.5)
    tokens, lp = sample_next(LOGITS.expand(64, -1), params, torch.Generator().manual_seed(3))
    expected = torch.log_softmax(LOGITS / 0.7, -1)[tokens]
    torch.testing.assert_close(lp, expected)


def test_truncation_keeps_the_crossing_token_and_ties_at_top_k():
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    kept = truncated_logits(logits, SamplingParams(top_k=2)).isfinite()
    assert kept.tolist() == [[True, True, True, False]]  # ties with the k-th are kept
    probs = torch.softmax(logits, -1)[0]
    exact_p = float(probs[0])
    kept = truncated_logits(logits, SamplingParams(top_p=exact_p)).isfinite()
    assert kept.tolist() == [[True, False, False, False]]


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"max_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_k": 0},
     {"min_p": 1.5}],
)  # fmt: skip
def test_invalid_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)
