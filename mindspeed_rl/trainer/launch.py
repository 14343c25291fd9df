"""Wire a DAPO run: Ray, the worker group, data, rewards, metrics; then ``fit()``.

Joins the Ray cluster the user asked for (``RAY_ADDRESS``, which the launch scripts export after
``ray start``), else starts a private local one, never another user's (``platform.ray_cluster``).
On CPU the local cluster registers one ``cpu_slot`` per worker and a logical CPU count above the
cores, so that reward processes and the driver never starve.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.platform.device import device_type, ray_resource_name

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    history: list[dict[str, float]]
    worker_info: list  # WorkerInfo per rank
    prompt_log: list[list[int]]


def starts_from_converted_weights(actor) -> bool:
    """``finetune: false`` on a directory of converted weights (tracker 'release') and no
    ``ckpt_step``: Megatron (and so the Ascend suite's recipes) start from those weights at
    iteration 0; there is no run to resume."""
    from mindspeed_rl.checkpoint.mcore_layout import RELEASE, read_tracker

    return actor.ckpt_step is None and read_tracker(actor.load) == RELEASE


def _init_ray(world_size: int) -> bool:
    """The cluster the user chose, else a local one (``platform.ray_cluster``); True if started."""
    from mindspeed_rl.platform.ray_cluster import init_ray

    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}}
    resources = {ray_resource_name(): world_size} if device_type() == "cpu" else None
    return init_ray(env, max(os.cpu_count() or 1, world_size) + 4, resources)


def run_platform() -> str:
    """The platform of the cluster joined (its devices, not the driver's: a head node may have
    none), or this machine's for the local cluster ``_init_ray`` started for it."""
    import ray

    from mindspeed_rl.platform.ray_resources import cluster_platform

    return cluster_platform(ray.cluster_resources())


def check_paths(config: RunConfig) -> None:
    """Every path the run reads exists (named by its key), before anything starts."""
    from pathlib import Path

    actor = config.actor
    wanted = {
        "megatron_training.tokenizer_name_or_path": (actor.tokenizer_name_or_path, "config.json"),
        "actor_config.load": (actor.load, None),
    }
    problems = []
    for key, (value, must_hold) in wanted.items():
        if value is None:
            if key.endswith("tokenizer_name_or_path"):
                problems.append(f"{key} is not set: the Hugging Face model directory")
            continue
        if not Path(value).is_dir():
            problems.append(f"{key}={value}: directory not found")
        elif must_hold and not (Path(value) / must_hold).is_file():
            problems.append(f"{key}={value}: has no {must_hold}")
    if actor.data_path is None:
        problems.append("megatron_training.data_path is not set: the preprocessing output_prefix")
    elif not Path(f"{actor.data_path}_packed_input_ids_document.idx").is_file():
        problems.append(
            f"megatron_training.data_path={actor.data_path}: no "
            f"{actor.data_path}_packed_input_ids_document.idx (run examples/data/preprocess_data.sh)"
        )
    if problems:
        raise ValueError("; ".join(problems))


def total_optimizer_steps(config: RunConfig) -> int:
    from mindspeed_rl.config.checks import trained_prompts_per_iteration

    rl = config.rl_config
    return (
        config.actor.train_iters
        * (trained_prompts_per_iteration(config) // rl.mini_batch_size)
        * rl.epochs
    )


@dataclass
class _DriverState:
    tokenizer: object
    loader: object
    validation: object
    scorer: object
    sink: object


def _prepare_driver(config: RunConfig, log_dir: str | None, opened: list) -> _DriverState:
    """The driver's half of the start-up: tokenizer, prompt datasets, reward scorer, metrics.
    Runs while the workers set up (their imports and model build are the longer half);
    ``opened`` collects what must be closed however the run ends."""
    import transformers

    from mindspeed_rl.data.prompt_dataset import PromptDataset
    from mindspeed_rl.data.prompt_loader import PromptDataLoader
    from mindspeed_rl.rewards.scoring import RewardScorer
    from mindspeed_rl.trainer.metrics import MetricsSink

    actor, rl = config.actor, config.rl_config
    tokenizer = transformers.AutoTokenizer.from_pretrained(actor.tokenizer_name_or_path)
    keys = list(dict.fromkeys(["labels", *actor.dataset_additional_keys]))
    train = PromptDataset(actor.data_path, actor.split, "train", keys, tokenizer)
    loader = PromptDataLoader(
        train, actor.global_batch_size, seed=actor.seed, shuffle=not actor.no_shuffle,
        full_shuffle=actor.full_shuffle_instruction_dataset,
    )  # fmt: skip
    validation = None
    if rl.validation_interval or rl.validate_before_train:
        valid = PromptDataset(actor.data_path, actor.split, "valid", keys, tokenizer)
        if len(valid) == 0:
            raise ValueError(
                f"validation is on but megatron_training.split={actor.split!r} leaves no "
                "validation prompts; use e.g. '90,10,0'"
            )
        validation = valid.batch(list(range(len(valid))))
    scorer = RewardScorer(
        rl.verifier_function, rl.verifier_weight, rl.verifier_timeout, rl.verifier_parallel
    )
    opened.append(scorer)
    sink = MetricsSink(
        log_dir, actor.log_interval, rl.use_tensorboard, rl.use_wandb, rl.wandb_project,
        rl.wandb_exp_name, config.model_dump(mode="json"),
    )  # fmt: skip
    opened.append(sink)
    # imported here, not after the workers are ready: tensordict alone imports TorchDynamo
    import mindspeed_rl.trainer.dapo_trainer  # noqa: F401

    return _DriverState(tokenizer, loader, validation, scorer, sink)


def _phases(info: list) -> str:
    """The slowest rank's set-up phases, e.g. 'imports 1.9 s, actor 0.4 s, ...'."""
    slowest = max(info, key=lambda i: sum(i.setup_seconds.values()))
    return ", ".join(f"{name} {sec:.1f} s" for name, sec in slowest.setup_seconds.items())


def _log_worker_processes(info: list) -> None:
    """What tools and tests act on: this run's own processes (never others found by name)."""
    import ray

    ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    logger.info("worker processes: %s", ", ".join(
        f"rank {i.rank} pid {i.pid} on {ips.get(i.node_id, '?')} (node {(i.node_id or '?')[:12]})"
        for i in info
    ))  # fmt: skip


def _raise_if_a_node_was_lost(workers, err: BaseException) -> None:
    """A rank failure on a multi-node run: if Ray reports one of the run's nodes dead, end with
    one line naming it and its ranks (its peers' socket errors come first and name neither)."""
    from mindspeed_rl.trainer.restart import NodeLostError, lost_nodes, node_lost_message
    from mindspeed_rl.workers.group import WorkerInputError

    if workers is None or isinstance(err, (WorkerInputError, NodeLostError)):
        return
    dead = lost_nodes(workers.placements)
    if dead:
        raise NodeLostError(node_lost_message(dead, err)) from err


def run_training(config: RunConfig, log_dir: str | None = None) -> RunResult:
    """Train to the end of ``train_iters``; raises WorkerError naming a failed rank.

    Start-up order: Ray, then the workers' set-up is started and, while it runs, the driver loads
    its tokenizer, datasets, reward scorer and metrics sink; the log line "workers ready in X s
    after Ray in Y s: ..." times each part (worker processes, set-up phases, the driver)."""
    from mindspeed_rl.checkpoint.training_state import load_trainer_state, resolve_iteration
    from mindspeed_rl.platform.expected_warnings import fallback_note
    from mindspeed_rl.platform.jemalloc import check_host_allocator
    from mindspeed_rl.platform.worker_env import check_process_env, worker_env
    from mindspeed_rl.workers.group import WorkerError, WorkerGroup
    from mindspeed_rl.workers.integrated import IntegratedWorker
    from mindspeed_rl.workers.profiling import with_profiling
    from mindspeed_rl.workers.reference import needs_reference

    actor, rl = config.actor, config.rl_config
    check_paths(config)
    if rl.integrated_mode_config.ref_model_load_path and not needs_reference(rl):
        logger.info(
            "rl_config.integrated_mode_config.ref_model_load_path: no reference model is built "
            "(neither use_kl_loss nor use_kl_in_reward is on)"
        )
    resume_state = None
    if not actor.finetune and starts_from_converted_weights(actor):
        logger.info(
            "actor_config.finetune: false on converted weights ('release' in %s): starting from "
            "them at iteration 0, as Megatron does", actor.load,
        )  # fmt: skip
    elif not actor.finetune:
        iteration = resolve_iteration(actor.load, actor.ckpt_step)
        resume_state = load_trainer_state(actor.load, iteration)
    world = rl.actor_resource.num_npus
    # a forced-on NZ here would be overridden silently by the workers' runtime env
    check_process_env(where="the driver's environment")
    worker_env(config, "npu")  # the runtime-env YAML's problems before Ray starts
    check_host_allocator()
    note = fallback_note()
    if note:
        logger.info(note)

    workers, opened = None, []
    started_ray = False
    try:
        clock = time.perf_counter()
        started_ray = _init_ray(world)
        ray_seconds = time.perf_counter() - clock
        platform = run_platform()
        workers = WorkerGroup(
            with_profiling(IntegratedWorker), world, platform=platform,
            runtime_env={"env_vars": worker_env(config, platform)},
        )  # fmt: skip
        master_addr, master_port = workers.rendezvous()
        processes_seconds = time.perf_counter() - clock - ray_seconds
        threads = max(1, (os.cpu_count() or 1) // world) if platform == "cpu" else 4
        steps = total_optimizer_steps(config)
        resume = None
        if resume_state is not None:
            resume = {
                "iteration": resume_state["iteration"],
                "actor_version": resume_state["actor_version"],
            }
        setup = workers.submit(
            "setup",
            per_rank=[
                (config, world, p.local_rank, master_addr, master_port, steps, threads, resume)
                for p in workers.placements
            ],
        )
        driver = _prepare_driver(config, log_dir, opened)
        driver_seconds = time.perf_counter() - clock - ray_seconds
        info = workers.wait(setup, "setup")
        logger.info(
            "workers ready in %.1f s after Ray in %.1f s: processes up in %.1f s, then set-up "
            "of the slowest rank %s; driver ready %.1f s after Ray; ranks (rank, dp, tp) %s",
            time.perf_counter() - clock - ray_seconds, ray_seconds, processes_seconds,
            _phases(info), driver_seconds, [(i.rank, i.dp_rank, i.tp_rank) for i in info],
        )  # fmt: skip
        _log_worker_processes(info)
        from mindspeed_rl.trainer.dapo_trainer import DAPOTrainer

        trainer = DAPOTrainer(
            config, workers, info, driver.tokenizer, driver.loader, driver.scorer, driver.sink,
            driver.validation,
        )  # fmt: skip
        if resume_state is not None:
            trainer.load_state_dict(resume_state)
            logger.info("resumed from %s at iteration %d", actor.load, trainer.iteration)
        history = trainer.fit()
        return RunResult(history, info, trainer.prompt_log)
    except WorkerError as err:
        _raise_if_a_node_was_lost(workers, err)
        raise
    finally:
        for thing in reversed(opened):
            thing.close()
        if workers is not None:
            workers.shutdown()
        if started_ray:
            from mindspeed_rl.platform.ray_cluster import shutdown_local

            shutdown_local()
