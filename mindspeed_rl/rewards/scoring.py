"""Batched rule rewards: every configured verifier on every response, combined by weight.

Reads ``rl_config.verifier_function``, ``verifier_weight``, ``verifier_timeout`` and
``verifier_parallel``. The combined score of a response is ``sum_k weight_k * score_k`` (before
overlong shaping, which is ``algorithms.overlong``'s job). A call that raises or exceeds
``verifier_timeout`` gets its verifier's incorrect score and is counted in
``reward/<name>/errors`` or ``reward/<name>/timeouts``; it never fails the step.

``verifier_parallel == 1`` scores in the calling process. There a call cannot be interrupted (no
signal works off the main thread), so the bound is the verifiers' own: the built-in ones read a
fixed window with linear-time scans (fuzz-tested), and a call found to have run past the limit is
still scored as a time-out. ``verifier_parallel >= 2`` runs the calls in that many worker processes
(``process_pool``), where an overrunning call is killed at the limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mindspeed_rl.rewards.process_pool import BoundedProcessPool
from mindspeed_rl.rewards.registry import VERIFIERS, unknown_verifier_message
from mindspeed_rl.rewards.verifier import Verifier
from mindspeed_rl.rewards.verifier_worker import (
    ERROR,
    OK,
    TIMEOUT,
    CallOutcome,
    call_verifier,
    failed,
)

logger = logging.getLogger(__name__)


@dataclass
class RewardScores:
    """Scores of a batch of responses, one entry per response in every list.

    Attributes:
        scores: weighted sum over the verifiers (the rule reward, before overlong shaping).
        verifier_scores: each verifier's own score; ``filter_groups_metric`` names one of them.
        acc: each verifier's correct / incorrect verdict.
        pred: what each verifier extracted (normalized answer), for logs.
        metrics: ``reward/<name>/{mean,acc,errors,timeouts}`` (errors and timeouts are counts).
    """

    scores: list[float]
    verifier_scores: dict[str, list[float]] = field(default_factory=dict)
    acc: dict[str, list[bool]] = field(default_factory=dict)
    pred: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class RewardScorer:
    """Scores lists of responses with the configured verifiers.

    Args:
        verifier_function: registry names (``rl_config.verifier_function``), e.g. ['acc_for_dapo'].
        verifier_weight: one weight per name (``rl_config.verifier_weight``).
        verifier_timeout: wall-clock seconds per call (``rl_config.verifier_timeout``).
        verifier_parallel: worker processes; 1 scores in-process (``rl_config.verifier_parallel``).
        registry: where names are looked up; the project's ``VERIFIERS`` unless a caller (a test,
            a custom recipe) brings its own set.

    The worker pool starts on the first ``score`` call and lives until ``close``: start it once per
    run (a reward actor's lifetime), not per step.
    """

    def __init__(
        self,
        verifier_function: Sequence[str],
        verifier_weight: Sequence[float],
        verifier_timeout: float,
        verifier_parallel: int,
        registry: Mapping[str, Verifier] = VERIFIERS,
    ) -> None:
        if not verifier_function:
            raise ValueError("rl_config.verifier_function is empty: name at least one verifier")
        if len(verifier_weight) != len(verifier_function):
            raise ValueError(
                f"rl_config.verifier_weight has {len(verifier_weight)} entries but "
                f"verifier_function has {len(verifier_function)}: give one weight per verifier"
            )
        if len(set(verifier_function)) != len(verifier_function):
            raise ValueError(
                f"rl_config.verifier_function lists a verifier twice: {list(verifier_function)}; "
                "list each once and set its verifier_weight instead"
            )
        if not verifier_timeout > 0:
            raise ValueError(f"rl_config.verifier_timeout must be > 0 s, got {verifier_timeout}")
        if verifier_parallel < 1:
            raise ValueError(
                f"rl_config.verifier_parallel must be >= 1 (1 = in-process), got {verifier_parallel}"
            )
        unknown = [name for name in verifier_function if name not in registry]
        if unknown:
            raise ValueError(unknown_verifier_message(unknown[0], registry))
        self.verifiers: dict[str, Verifier] = {name: registry[name] for name in verifier_function}
        self.weights = dict(zip(verifier_function, (float(w) for w in verifier_weight)))
        self.timeout_s = float(verifier_timeout)
        self.parallel = int(verifier_parallel)
        self._pool: BoundedProcessPool | None = None

    def score(self, responses: Sequence[str], ground_truths: Sequence[str]) -> RewardScores:
        """Score ``responses[i]`` against ``ground_truths[i]`` with every configured verifier."""
        if len(responses) != len(ground_truths):
            raise ValueError(
                f"{len(responses)} responses but {len(ground_truths)} ground truths: "
                "one ground truth per response"
            )
        for what, values in (("response", responses), ("ground truth", ground_truths)):
            for value in values:
                if not isinstance(value, str):
                    raise TypeError(f"every {what} must be a str, got {type(value).__name__}")
        names = list(self.verifiers)
        tasks = [
            (name, self.verifiers[name].window(response), truth)
            for name in names
            for response, truth in zip(responses, ground_truths)
        ]
        outcomes = self._run(tasks)
        n = len(responses)
        result = RewardScores(scores=[0.0] * n)
        for k, name in enumerate(names):
            self._collect(name, outcomes[k * n : (k + 1) * n], result)
        return result

    def _run(self, tasks: list[tuple[str, str, str]]) -> list[CallOutcome]:
        if self.parallel == 1:
            return [self._call_in_process(*task) for task in tasks]
        if self._pool is None:
            fns = {name: verifier.fn for name, verifier in self.verifiers.items()}
            self._pool = BoundedProcessPool(fns, self.parallel, self.timeout_s)
        return self._pool.run(tasks)

    def _call_in_process(self, name: str, response: str, ground_truth: str) -> CallOutcome:
        start = time.perf_counter()
        outcome = call_verifier(self.verifiers[name].fn, response, ground_truth)
        elapsed = time.perf_counter() - start
        if elapsed > self.timeout_s:
            return failed(
                TIMEOUT,
                f"took {elapsed:.2f} s (limit {self.timeout_s} s); in-process calls are not "
                "interrupted, set rl_config.verifier_parallel >= 2 to stop them at the limit",
            )
        return outcome

    def _collect(self, name: str, outcomes: list[CallOutcome], into: RewardScores) -> None:
        verifier = self.verifiers[name]
        weight = self.weights[name]
        scores, acc, pred = [], [], []
        failures = {ERROR: 0, TIMEOUT: 0}
        first_failure = ""
        for i, (status, score, correct, extracted, error) in enumerate(outcomes):
            if status != OK:
                score, correct, extracted = verifier.incorrect_score, False, ""
                failures[status] += 1
                first_failure = first_failure or f"{status}: {error}"
            scores.append(score)
            acc.append(correct)
            pred.append(extracted)
            into.scores[i] += weight * score
        into.verifier_scores[name] = scores
        into.acc[name] = acc
        into.pred[name] = pred
        n = max(len(scores), 1)
        into.metrics[f"reward/{name}/mean"] = sum(scores) / n
        into.metrics[f"reward/{name}/acc"] = sum(acc) / n
        into.metrics[f"reward/{name}/errors"] = float(failures[ERROR])
        into.metrics[f"reward/{name}/timeouts"] = float(failures[TIMEOUT])
        if first_failure:
            logger.warning(
                "verifier '%s' failed on %d of %d responses (scored %s); first: %s",
                name,
                failures[ERROR] + failures[TIMEOUT],
                len(scores),
                verifier.incorrect_score,
                first_failure,
            )

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
