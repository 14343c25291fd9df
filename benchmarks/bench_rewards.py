"""Rule-reward throughput: ``RewardScorer`` next to a plain loop over the same verifier, same run.

    python benchmarks/bench_rewards.py                        # 4096 responses of ~2 KB
    python benchmarks/bench_rewards.py --responses 16384 --workers 2 4 8 --verifiers acc_for_dapo format

Measured, each the best of ``--repeats`` (the machine may be shared):

- baseline: ``[fn(response, truth) for ...]``, the verifier called directly in a Python loop, with
  no time bound and no error handling;
- in-process: ``RewardScorer(verifier_parallel=1)``: the same calls plus the safety wrapper
  (exceptions and overruns scored and counted) and result collection;
- N workers: ``RewardScorer(verifier_parallel=N)``: calls in N worker processes with a hard
  per-call deadline. The pool is started once (start-up printed separately) and reused, as in
  training, where one scorer lives for the whole run.

Responses are synthetic math solutions: ~2 KB of prose ending in an ``Answer:`` line, half of
them correct. Throughput is responses/s (all verifiers of a response count as one).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from mindspeed_rl.rewards.registry import VERIFIERS
from mindspeed_rl.rewards.scoring import RewardScorer

WORDS = (
    "Let the triangle have sides so that by the law of cosines we get the sum of the roots is "
    "$x^2+y^2=25$ and therefore $\\frac{1}{2}$ of $\\sqrt{3}$ which means modulo 7 the remainder "
    "is counted twice so we subtract"
).split()


def synthetic_responses(count: int, chars: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    responses, truths = [], []
    for _ in range(count):
        truth = str(rng.randint(0, 10_000))
        answer = truth if rng.random() < 0.5 else str(rng.randint(0, 10_000))
        body: list[str] = []
        size = 0
        while size < chars:
            word = rng.choice(WORDS)
            body.append(word)
            size += len(word) + 1
        wrapped = f"$\\boxed{{{answer}}}$" if rng.random() < 0.5 else answer
        responses.append(" ".join(body) + f".\n\nAnswer: {wrapped}")
        truths.append(truth)
    return responses, truths


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=4096)
    parser.add_argument("--chars", type=int, default=2048, help="approximate response length")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--verifiers", nargs="+", default=["acc_for_dapo"])
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    unknown = [name for name in args.verifiers if name not in VERIFIERS]
    if unknown:
        parser.error(f"unknown verifier {unknown[0]}; known: {', '.join(sorted(VERIFIERS))}")

    responses, truths = synthetic_responses(args.responses, args.chars)
    fns = [VERIFIERS[name].fn for name in args.verifiers]
    mean_chars = sum(map(len, responses)) / len(responses)
    print(
        f"{len(responses)} responses, mean {mean_chars:.0f} chars, verifiers {args.verifiers}, "
        f"best of {args.repeats}"
    )

    def plain_loop() -> list[float]:
        return [sum(fn(r, t).score for fn in fns) for r, t in zip(responses, truths)]

    baseline = best_of(args.repeats, plain_loop)
    weights = [1.0] * len(args.verifiers)
    rows = [("plain loop (baseline)", baseline, "")]
    scorer = RewardScorer(args.verifiers, weights, args.timeout, 1)
    expected = scorer.score(responses, truths).scores
    assert expected == plain_loop(), "scorer and plain loop disagree"
    rows.append(
        (
            "RewardScorer in-process",
            best_of(args.repeats, lambda: scorer.score(responses, truths)),
            "",
        )
    )
    for workers in args.workers:
        start = time.perf_counter()
        scorer = RewardScorer(args.verifiers, weights, args.timeout, workers)
        assert scorer.score(responses[:1], truths[:1]).scores == expected[:1]
        startup = time.perf_counter() - start
        assert scorer.score(responses, truths).scores == expected
        elapsed = best_of(args.repeats, lambda s=scorer: s.score(responses, truths))
        rows.append(
            (f"RewardScorer {workers} workers", elapsed, f"pool start {startup * 1e3:.0f} ms")
        )
        scorer.close()
    print(f"{'':28s} {'seconds':>9s} {'responses/s':>12s} {'vs baseline':>12s}")
    for name, seconds, note in rows:
        rate = len(responses) / seconds
        print(f"{name:28s} {seconds:9.4f} {rate:12.0f} {baseline / seconds:11.2f}x  {note}")


if __name__ == "__main__":
    main()
