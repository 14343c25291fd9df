"""How an iteration collects its batch with partial rollout (docs/partial_rollout.md): rounds of
bounded generation over the buffer of samples in flight (``rollout_buffer``) until enough groups
are complete. A part of ``DAPOTrainer`` (its state: ``buffer``, ``loader``, ``rollout``,
``sampler``, ``actor_version``), kept apart from the plain loop it replaces."""

from __future__ import annotations

from tensordict import TensorDict

from mindspeed_rl.trainer.rollout_buffer import PartialRolloutBuffer
from mindspeed_rl.workers.timing import Timer


class PartialRolloutCollection:
    def _partial_round(self, rounds: int) -> dict[str, float]:
        """One partial-rollout round: fresh batches of prompts join while fewer than two
        iterations' worth of groups (``2 x global_batch_size``, complete or in flight) are on
        hand, then every unfinished sample is continued, the started ones first.

        Two batches on hand let an iteration train the groups that finished while the
        stragglers of the other batch go on in the next round. The bound counts complete groups
        too: complete groups beyond the iteration's wait, oldest first, and admitting more
        whatever is on hand would queue them behind one another, so that every token, not only
        the tail's, would be iterations old (measured with the earlier rule, fresh batches while
        fewer than (N - 1) x global_batch_size groups were unfinished: policy age 2 on nearly
        every trained token at N = 4)."""
        gbs = self.config.actor.global_batch_size
        while len(self.buffer.groups) < 2 * gbs:  # every group held is complete or in flight
            prompts = self.loader.next_batch()
            self._iteration_prompts.extend(prompts.indices)
            self.buffer.admit(
                prompts.prompt_ids, prompts.texts("labels"), prompts.indices, self.actor_version
            )
        request = self.buffer.round_request()
        if not request.contexts:  # enough complete groups on hand and nothing in flight
            return {"continued": 0.0, "tokens": 0.0}
        params = self._sampling(self.n, self.iteration * 1000 + rounds)
        out = self.rollout.generate(request.contexts, params, request.shape)
        tokens = self.buffer.absorb(request, out, self.actor_version)
        return {"continued": float(request.continued), "tokens": float(tokens)}

    def _groups_batch(self, groups) -> TensorDict:
        rl = self.config.rl_config
        batch = PartialRolloutBuffer.batch_of(
            groups, pad_token_id=self.pad, max_prompt_length=rl.max_prompt_length,
            max_tokens=rl.rollout_max_tokens,
        )  # fmt: skip
        scored = self._score(batch)
        for key in ("score", "filter_metric", "acc", "overlong_penalty", "truncated"):
            batch.set(key, scored[key])
        return batch, scored["metrics"]

    def _collect_partial(self, timer: Timer) -> tuple[TensorDict, dict[str, float]]:
        """Rounds until the iteration has its groups: ``global_batch_size`` complete groups, the
        oldest first (later ones wait, unless waiting would age them past N - 1: those are
        dropped, ``partial_rollout/expired_groups``), or, with dynamic sampling, until the
        sampler has its prompts from the groups completed so far (surplus dropped as in DAPO)."""
        rl, gbs = self.config.rl_config, self.config.actor.global_batch_size
        scored_batches, reward_metrics, totals = [], {}, {"continued": 0.0, "tokens": 0.0}
        expired, rounds = [], 0
        while True:
            with timer.phase("gen"):
                for key, value in self._partial_round(rounds).items():
                    totals[key] += value
            rounds += 1
            if self.sampler is None:
                if sum(g.complete for g in self.buffer.groups) < gbs:
                    continue
                # a group left waiting now would be older than N - 1 at the next update
                oldest_allowed = self.actor_version - (rl.partial_rollout_max_split - 1)
                taken, expired = self.buffer.pop_complete(gbs, must_before=oldest_allowed)
                with timer.phase("reward"):
                    trained, metrics = self._groups_batch(taken)
                scored_batches.append(trained)
                reward_metrics = {k: float(v) for k, v in metrics.items()}
                ds_metrics = {"dynamic_sampling/num_gen_batches": float(rounds)}
                break
            taken, _ = self.buffer.pop_complete()
            if not taken:
                continue
            with timer.phase("reward"):
                batch, metrics = self._groups_batch(taken)
            scored_batches.append(batch)
            for key, value in metrics.items():
                reward_metrics[key] = reward_metrics.get(key, 0.0) + float(value)
            self.sampler.add(batch, batch["filter_metric"])
            if self.sampler.ready:
                trained, ds_metrics = self.sampler.take(divisor=self._row_divisor())
                break
        metrics = self._collection_metrics(scored_batches, ds_metrics, reward_metrics)
        metrics.update({
            "partial_rollout/rounds": float(rounds),
            "partial_rollout/continued_samples": totals["continued"],
            "partial_rollout/generated_tokens": totals["tokens"],
            "partial_rollout/buffered_samples": float(self.buffer.unfinished_samples()),
            "partial_rollout/buffered_groups": float(len(self.buffer.groups)),
            "partial_rollout/expired_groups": float(len(expired)),
        })  # fmt: skip
        return trained, metrics
