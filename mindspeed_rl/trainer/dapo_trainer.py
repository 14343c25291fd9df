"""The DAPO loop on the Ray driver (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement
Learning System at Scale"): clip-higher, token-level loss, overlong reward shaping, dynamic
sampling.

One iteration::

    generate n samples per prompt -> rule rewards (+ overlong penalty) -> keep groups whose
    filter metric varies (repeat until filter_groups_train_batch_size prompts) -> group-norm
    advantages -> old log-probs (skipped when on-policy) -> reference log-probs and the KL in
    the reward (only with a KL term) -> actor update (mini-batches x epochs) -> weight sync ->
    metrics -> validation
"""

from __future__ import annotations

import logging
import sys
import time
import uuid

import torch
from tensordict import TensorDict
from tqdm import tqdm

from mindspeed_rl.algorithms.advantages import broadcast_to_tokens, group_norm_advantages
from mindspeed_rl.algorithms.dynamic_sampling import DynamicSampler, filter_zero_variance_groups
from mindspeed_rl.algorithms.kl_control import KLController, kl_penalised_scores
from mindspeed_rl.algorithms.overlong import filter_overlong, overlong_penalty, truncated_responses
from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.data.prompt_dataset import PromptBatch
from mindspeed_rl.data.prompt_loader import PromptDataLoader
from mindspeed_rl.rewards.registry import VERIFIERS
from mindspeed_rl.rewards.scoring import RewardScorer
from mindspeed_rl.rollout.factory import sampling_params
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.trainer import batch as batch_ops
from mindspeed_rl.trainer.metrics import MetricsSink, non_finite
from mindspeed_rl.trainer.partial_collection import PartialRolloutCollection
from mindspeed_rl.trainer.profiling import IterationProfiler
from mindspeed_rl.trainer.rollout_buffer import (
    PartialRolloutBuffer,
    log_prob_gap_by_age,
    policy_age_metrics,
)
from mindspeed_rl.workers.actor_group import ActorGroup, RolloutGroup
from mindspeed_rl.workers.group import WorkerGroup
from mindspeed_rl.workers.reference import needs_reference
from mindspeed_rl.workers.timing import Timer
from mindspeed_rl.workers.worker_info import WorkerInfo

logger = logging.getLogger(__name__)


# megatron_training.stage -> what the logs call the run (the loop is the same; the stage sets
# rl_config defaults: config/schema.py STAGE_RL_DEFAULTS)
STAGE_NAMES = {"ray_dapo": "DAPO", "ray_grpo": "GRPO"}


def accuracy_verifier(rl) -> str:
    """The verifier whose verdict is ``rollout/acc`` and ``val/acc`` (and, with dynamic sampling,
    whose score the filter reads): ``filter_groups_metric`` when it is one of ``verifier_function``
    (the DAPO recipes), else the first verifier. A GRPO recipe lists only its own verifier (e.g.
    ``math_17k_acc``) and leaves ``filter_groups_metric`` at its default, read only by the filter.
    """
    if rl.filter_groups_enable or rl.filter_groups_metric in rl.verifier_function:
        return rl.filter_groups_metric
    return rl.verifier_function[0]


class DAPOTrainer(PartialRolloutCollection):
    def __init__(
        self,
        config: RunConfig,
        workers: WorkerGroup,
        worker_info: list[WorkerInfo],
        tokenizer,
        loader: PromptDataLoader,
        scorer: RewardScorer,
        sink: MetricsSink,
        validation_prompts: PromptBatch | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.info = worker_info
        self.actor = ActorGroup(workers, worker_info, config)
        self.rollout = RolloutGroup(
            workers, worker_info, config.generate_config.infer_tensor_parallel_size
        )
        self.tokenizer = tokenizer
        self.loader = loader
        self.scorer = scorer
        self.sink = sink
        self.validation_prompts = validation_prompts
        rl = config.rl_config
        self.n = rl.n_samples_per_prompt
        self.pad = worker_info[0].pad_token_id
        self.eos = list(worker_info[0].eos_token_ids)
        self.dp_size = worker_info[0].dp_size
        self.iteration = 0
        metric = self.acc_metric
        verifier = VERIFIERS[metric]
        self.sampler = (
            DynamicSampler(
                rl.filter_groups_train_batch_size,
                rl.filter_groups_max_batches,
                rl.filter_groups_on_max_batches,
                metric,
                verifier.correct_score,
                verifier.incorrect_score,
            )
            if rl.filter_groups_enable
            else None
        )
        # the KL coefficient (fixed or adaptive); None: no KL term and no reference model
        self.kl_ctrl = KLController.from_config(rl) if needs_reference(rl) else None
        self.history: list[dict[str, float]] = []
        self.actor_version = 0  # optimizer updates the engines' weights reflect
        # dataset indices of the prompts generated for, per iteration (resume checks use them)
        self.prompt_log: list[list[int]] = []
        self._iteration_prompts: list[int] = []
        # partial rollout: samples in flight between rounds (None: every round runs to the end)
        self.buffer = (
            PartialRolloutBuffer(
                rl.partial_rollout_max_split,
                rl.rollout_max_tokens,
                self.n,
                self.eos,
                finish_share=rl.rollout_threshold_rate,
            )  # fmt: skip
            if rl.partial_rollout_max_split > 1
            else None
        )

    @property
    def acc_metric(self) -> str:
        """The verifier whose verdicts are ``rollout/acc`` and ``val/acc`` (``accuracy_verifier``)."""
        return accuracy_verifier(self.config.rl_config)

    # --- phases ------------------------------------------------------------------------------

    def _sampling(self, n: int, salt: int, temperature: float | None = None) -> SamplingParams:
        seed = self.config.actor.seed * 1_000_003 + salt
        sampling = self.config.generate_config.sampling_config
        if temperature is not None:
            sampling = sampling.model_copy(update={"temperature": temperature})
        return sampling_params(sampling, n, seed)

    def _score(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        rl = self.config.rl_config
        texts = self.tokenizer.batch_decode(
            [r[m.bool()].tolist() for r, m in zip(batch["responses"], batch["response_mask"])],
            skip_special_tokens=True,
        )
        scores = self.scorer.score(texts, batch.get("ground_truth").tolist())
        total = torch.tensor(scores.scores, dtype=torch.float32)
        lengths = batch["response_mask"].sum(-1)
        truncated = truncated_responses(
            batch["responses"], batch["response_mask"], self.eos, rl.rollout_max_tokens
        )
        penalty = torch.zeros_like(total)
        if rl.overlong_buffer_enable:
            penalty = overlong_penalty(
                lengths,
                rl.rollout_max_tokens,
                rl.overlong_buffer,
                rl.overlong_buffer_penalty_factor,
            )
        return {
            "score": total + penalty,
            "filter_metric": torch.tensor(
                scores.verifier_scores[self.acc_metric], dtype=torch.float32
            ),
            "acc": torch.tensor(scores.acc[self.acc_metric], dtype=torch.float32),
            "overlong_penalty": penalty,
            "truncated": truncated.float(),
            "metrics": scores.metrics,
        }

    def _generation_round(self, salt: int) -> TensorDict:
        rl = self.config.rl_config
        prompts = self.loader.next_batch()
        self._iteration_prompts.extend(prompts.indices)
        ids = [list(map(int, p)) for p in prompts.prompt_ids]
        out = self.rollout.generate(ids, self._sampling(self.n, salt))
        uids = [uuid.uuid4().hex for _ in ids]
        batch = batch_ops.generation_batch(
            ids, prompts.texts("labels"), uids, out, pad_token_id=self.pad,
            max_prompt_length=rl.max_prompt_length, max_response_length=rl.rollout_max_tokens,
        )  # fmt: skip
        return batch

    def collect_batch(self, timer: Timer) -> tuple[TensorDict, dict[str, float]]:
        """Generation batches until dynamic sampling has its prompts (or one batch without it)."""
        if self.buffer is not None:
            return self._collect_partial(timer)
        generated: list[TensorDict] = []
        reward_metrics: dict[str, float] = {}
        rounds = 0
        while True:
            with timer.phase("gen"):
                batch = self._generation_round(self.iteration * 1000 + rounds)
            with timer.phase("reward"):
                scored = self._score(batch)
            rounds += 1
            for key in ("score", "filter_metric", "acc", "overlong_penalty", "truncated"):
                batch.set(key, scored[key])
            generated.append(batch)
            for key, value in scored["metrics"].items():
                reward_metrics[key] = reward_metrics.get(key, 0.0) + float(value)
            if self.sampler is None:
                trained, ds_metrics = batch, {"dynamic_sampling/num_gen_batches": 1.0}
                break
            self.sampler.add(batch, scored["filter_metric"])
            if self.sampler.ready:
                trained, ds_metrics = self.sampler.take(divisor=self._row_divisor())
                check = filter_zero_variance_groups(
                    trained["filter_metric"], trained.get("uid").tolist()
                )
                ds_metrics["dynamic_sampling/constant_groups_trained"] = float(
                    check.num_groups - check.num_kept_groups
                )
                break
        return trained, self._collection_metrics(generated, ds_metrics, reward_metrics)

    def _collection_metrics(self, scored: list[TensorDict], ds_metrics: dict,
                            reward_metrics: dict) -> dict[str, float]:  # fmt: skip
        """The metrics of an iteration's scored batches (reward metrics summed over them)."""
        everything = torch.cat(scored) if len(scored) > 1 else scored[0]
        metrics = {**ds_metrics, **self._rollout_metrics(everything)}
        count = len(scored)
        metrics.update(
            {k: v / count if k.endswith(("mean", "acc")) else v for k, v in reward_metrics.items()}
        )
        if self.sampler is not None and metrics.get("dynamic_sampling/generated_groups"):
            metrics["dynamic_sampling/kept_group_ratio"] = (
                metrics["dynamic_sampling/kept_groups"]
                / metrics["dynamic_sampling/generated_groups"]
            )
        return metrics

    def _row_divisor(self) -> int:
        """Rows of a partial batch must split over DP ranks (and into fixed micro-batches)."""
        if self.config.rl_config.use_dynamic_bsz:
            return self.dp_size
        return self.dp_size * self.config.actor.micro_batch_size

    def _rollout_metrics(self, batch: TensorDict) -> dict[str, float]:
        lengths = batch["response_mask"].sum(-1).float()
        max_tokens = self.config.rl_config.rollout_max_tokens
        return {
            "rollout/acc": float(batch["acc"].mean()),
            "rollout/score_mean": float(batch["score"].mean()),
            "rollout/overlong_ratio": float(batch["truncated"].mean()),
            "rollout/overlong_penalty_mean": float(batch["overlong_penalty"].mean()),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/clip_ratio": float((lengths >= max_tokens).float().mean()),
        }

    def _mini_batches(self, rows: int) -> int:
        per_mini = self.config.rl_config.mini_batch_size * self.n
        if rows % per_mini == 0:
            return rows // per_mini
        logger.warning(
            "%d rows do not split into mini-batches of %d samples (partial dynamic-sampling "
            "batch): one optimizer step on all of them", rows, per_mini,
        )  # fmt: skip
        return 1

    def prepare_update(self, batch: TensorDict) -> None:
        rl = self.config.rl_config
        loss_mask = batch["response_mask"]
        if rl.overlong_filtering:
            loss_mask = filter_overlong(loss_mask, batch["truncated"].bool())
        batch.set("loss_mask", loss_mask)
        self._set_advantages(batch, batch["score"])

    def _set_advantages(self, batch: TensorDict, scores: torch.Tensor) -> None:
        rl = self.config.rl_config
        advantages = group_norm_advantages(scores, batch.get("uid").tolist(), rl.norm_adv_by_std)
        batch.set("advantages", broadcast_to_tokens(advantages, batch["loss_mask"]))

    def _apply_kl_in_reward(self, batch: TensorDict) -> dict[str, float]:
        """With ``use_kl_in_reward``: advantages from the KL-penalised scores. Returns the KL
        metrics (``actor/ref_log_prob_diff``: the actor's old log-probs vs the reference's, 0 at
        the start of a run from the reference weights)."""
        rl = self.config.rl_config
        mask = batch["response_mask"]
        metrics = {}
        old = batch.get("old_log_probs", None)
        if old is not None:
            metrics["actor/ref_log_prob_diff"] = float(
                (old - batch["ref_log_probs"])[mask.bool()].abs().mean()
            )
        if rl.use_kl_in_reward:
            scores, kl_metrics = kl_penalised_scores(
                batch["score"], old, batch["ref_log_probs"], mask, rl.kl_penalty,
                self.kl_ctrl.value,
            )  # fmt: skip
            self._set_advantages(batch, scores)
            metrics.update(kl_metrics)
        return metrics

    # --- the loop ----------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        rl = self.config.rl_config
        timer = Timer()
        with timer.phase("total"):
            batch, metrics = self.collect_batch(timer)
            self.prepare_update(batch)
            if rl.shuffle_mini_batch:
                batch = batch_ops.shuffle_rows(batch, self.config.actor.seed, self.iteration)
            planned = self.actor.plan(batch, self._mini_batches(len(batch)))
            metrics.update(planned.metrics)
            versions = batch.get("rollout_versions", None)
            off_policy = versions is not None and bool(
                (versions[batch["response_mask"].bool()] < self.actor_version).any()
            )
            if versions is not None:
                metrics.update(policy_age_metrics(versions, batch["loss_mask"], self.actor_version))
            if planned.update.mini_batches * rl.epochs > 1 or rl.use_kl_in_reward or off_policy:
                with timer.phase("old_log_prob"):
                    batch.set("old_log_probs", self.actor.log_probs(batch, planned))
                mask = batch["response_mask"].bool()
                metrics["rollout/log_prob_diff_vs_actor"] = float(
                    (batch["old_log_probs"] - batch["rollout_log_probs"])[mask].abs().mean()
                )
                if versions is not None:
                    metrics.update(log_prob_gap_by_age(
                        batch["old_log_probs"], batch["rollout_log_probs"], versions, mask,
                        self.actor_version,
                    ))  # fmt: skip
            if self.kl_ctrl is not None:
                with timer.phase("ref_log_prob"):
                    batch.set("ref_log_probs", self.actor.log_probs(batch, planned, reference=True))
                metrics.update(self._apply_kl_in_reward(batch))
            kl_coef = self.kl_ctrl.value if self.kl_ctrl is not None else None
            with timer.phase("update"):
                metrics.update(self.actor.update(batch, planned, kl_coef))
            if self.kl_ctrl is not None:
                metrics["actor/kl_coef"] = kl_coef
                # the controller's measure: the rewards' KL when it is there, else the loss's
                measured = metrics.get("rewards/kl", metrics.get("actor/kl", 0.0))
                self.kl_ctrl.update(measured, len(batch))
            with timer.phase("sync"):
                self.actor_version = self.actor.sync_weights()
            metrics["actor/weight_version"] = float(self.actor_version)
            metrics.update(self.actor.memory_metrics())
        metrics.update(timer.metrics())
        metrics.update(self._compute_share(metrics["timing/total"]))
        tokens = float(batch["attention_mask"].sum())
        metrics["throughput/e2e_tokens_per_s_per_device"] = (
            tokens / metrics["timing/total"] / len(self.info)
        )
        metrics["throughput/trained_samples"] = float(len(batch))
        # the phase partial rollout targets, per sample that reached the update
        metrics["throughput/gen_s_per_trained_sample"] = metrics["timing/gen"] / len(batch)
        metrics["throughput/trained_response_tokens_per_s"] = (
            float(batch["response_mask"].sum()) / metrics["timing/total"]
        )
        return metrics

    def _compute_share(self, total: float) -> dict[str, float]:
        """Model compute per phase (the slowest rank's, as the phase waits for it) and the share
        of the iteration spent outside it: Ray transfers, padding, rewards, weight sync."""
        per_rank = self.workers.call("pop_compute_seconds")
        phases = {key for seconds in per_rank for key in seconds}
        compute = {k: max(seconds.get(k, 0.0) for seconds in per_rank) for k in phases}
        out = {f"compute/{k}": v for k, v in compute.items()}
        out["timing/orchestration_share"] = max(0.0, 1.0 - sum(compute.values()) / total)
        return out

    def validate(self) -> dict[str, float]:
        """Accuracy on the held-out prompts, one sample each (at ``validation_temperature``),
        same verifiers."""
        start = time.perf_counter()
        prompts = self.validation_prompts
        ids = [list(map(int, p)) for p in prompts.prompt_ids]
        params = self._sampling(
            1, salt=-1 - self.iteration, temperature=self.config.rl_config.validation_temperature
        )
        out = self.rollout.generate(ids, params)
        texts = self.tokenizer.batch_decode(
            [r[m.bool()].tolist() for r, m in zip(out.responses, out.response_mask)],
            skip_special_tokens=True,
        )
        truths = prompts.texts("labels")
        scores = self.scorer.score(texts, [truths[p] for p in out.prompt_index])
        acc = sum(scores.acc[self.acc_metric]) / max(len(texts), 1)
        self.workers.call("pop_compute_seconds")  # not part of a training iteration's compute
        return {
            "val/acc": acc,
            "val/prompts": float(len(texts)),
            "timing/validate": time.perf_counter() - start,
        }

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The driver's part of a checkpoint (plain types: loads with weights_only=True)."""
        return {
            "iteration": self.iteration,
            "data": self.loader.state_dict(),
            "dynamic_sampling": self.sampler.state_dict() if self.sampler is not None else None,
            "actor_version": int(self.actor_version),
            "kl_ctrl": self.kl_ctrl.state_dict() if self.kl_ctrl is not None else None,
            "partial_rollout": self.buffer.state_dict() if self.buffer is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.loader.load_state_dict(state["data"])
        if self.sampler is not None and state["dynamic_sampling"] is not None:
            self.sampler.load_state_dict(state["dynamic_sampling"])
        self.actor_version = int(state["actor_version"])
        if self.kl_ctrl is not None and state.get("kl_ctrl") is not None:
            self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        carried = state.get("partial_rollout")
        if self.buffer is not None and carried is not None:
            self.buffer.load_state_dict(carried)
        elif carried and carried["groups"]:
            logger.warning(
                "the checkpoint holds %d partial-rollout groups in flight; with "
                "rl_config.partial_rollout_max_split <= 1 they are dropped",
                len(carried["groups"]),
            )

    def save_checkpoint(self) -> None:
        """Every rank writes its shard; then one finalizer per storage domain renames and moves
        the tracker (rank 0 on shared storage; each node's first rank with no_shared_storage)."""
        actor = self.config.actor
        root = actor.save
        self.workers.call("save_checkpoint", root, self.iteration)
        if actor.no_shared_storage:
            finalizers = [i.rank for i in self.info if i.local_rank == 0]
        else:
            finalizers = [0]
        refs = [
            self.workers.workers[r].finalize_checkpoint.remote(
                root, self.iteration, self.state_dict(), actor.keep_last_checkpoints
            )
            for r in finalizers
        ]
        self.workers.get(refs, finalizers, "finalize_checkpoint")
        logger.info("saved iteration %d to %s", self.iteration, root)

    def fit(self) -> list[dict[str, float]]:
        rl, actor = self.config.rl_config, self.config.actor
        if rl.validate_before_train and self.validation_prompts is not None:
            metrics = self.validate()
            self.sink.log(self.iteration, metrics)
            self.history.append({"iteration": float(self.iteration), **metrics})
        name = STAGE_NAMES[actor.stage]
        logger.info(
            "%s: KL loss %s, KL in reward %s, filter groups %s, accuracy from '%s'", name,
            rl.use_kl_loss, rl.use_kl_in_reward, rl.filter_groups_enable, self.acc_metric,
        )  # fmt: skip
        bar = tqdm(total=actor.train_iters, initial=self.iteration, desc=name, unit="iter",
                   dynamic_ncols=True, disable=not sys.stderr.isatty())  # fmt: skip
        profiler = IterationProfiler(self.config.profiler, self.workers, actor.train_iters)
        self._loop(bar, profiler)
        profiler.close()  # the run ended inside the window (after an error: no trace)
        bar.close()
        return self.history

    def _loop(self, bar, profiler) -> None:
        from mindspeed_rl.platform.jemalloc import host_memory_metrics

        rl, actor = self.config.rl_config, self.config.actor
        while self.iteration < actor.train_iters:
            profiler.before(self.iteration + 1)
            metrics = self.step()
            self.iteration += 1
            profiler.after(self.iteration)
            self.prompt_log.append(self._iteration_prompts)
            self._iteration_prompts = []
            bar.update(1)
            bar.set_postfix(
                acc=f"{metrics['rollout/acc']:.3f}", score=f"{metrics['rollout/score_mean']:+.3f}"
            )
            if (
                self.validation_prompts is not None
                and rl.validation_interval
                and (
                    self.iteration % rl.validation_interval == 0
                    or self.iteration == actor.train_iters
                )
            ):
                metrics.update(self.validate())
            metrics.update(host_memory_metrics(purge=True))
            bad = non_finite(metrics)
            if bad:
                raise FloatingPointError(f"iteration {self.iteration}: non-finite metrics {bad}")
            self.sink.log(self.iteration, metrics)
            self.history.append({"iteration": float(self.iteration), **metrics})
            if actor.save is not None and (
                self.iteration == actor.train_iters
                or (actor.save_interval and self.iteration % actor.save_interval == 0)
            ):
                self.save_checkpoint()
