"""The integrated worker's set-up, one function per phase, each testable alone.

Order (``IntegratedWorker.setup``): platform -> distributed -> hf_assets -> actor -> reference
-> offloader -> engine -> first sync. Nothing of ``megatron`` is imported before
:func:`platform`: on NPU, MindSpeed's adaptor replaces megatron modules before their first import
(``mindspeed/megatron_adaptor.py``, 2.3.0_core_r0.12.1: "replace modules before import
megatron"), so every megatron import lives inside the phases after it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mindspeed_rl.config.schema import RunConfig


@dataclasses.dataclass
class HFAssets:
    """What the rollout engine and the weight mapping need of the Hugging Face directory."""

    path: str
    tokenizer: object
    config: object
    eos_token_ids: list[int]
    pad_token_id: int


def platform(worker, config: RunConfig, threads: int) -> str:
    """This process's platform, prepared for megatron (MindSpeed's adaptor on NPU); refuses a
    forced-on ``VLLM_ASCEND_ENABLE_NZ`` in the worker's environment. Returns the device type."""
    from mindspeed_rl.platform.device import device_type
    from mindspeed_rl.platform.megatron_setup import prepare_megatron
    from mindspeed_rl.platform.worker_env import check_process_env

    check_process_env(where="the worker's environment")
    torch.set_num_threads(threads)
    worker.config = config
    switches = {**config.model.model_dump(), **config.actor.model_dump()}
    if config.rl_config.use_remove_padding:
        # MindSpeed's packed-sequence path (models/mindspeed_packing.py): its GPTModel.forward
        # wrapper, attention and THD RoPE read the boundaries and position ids published per
        # micro-batch; with ring CP it validates variable_seq_lengths (as the suite requires)
        switches.update(reset_attention_mask=True, variable_seq_lengths=True)
    prepare_megatron(switches)
    return device_type()


def distributed(worker, world_size: int, local_rank: int, master_addr: str, master_port: int):
    """torch.distributed and Megatron's parallel state on the device Ray assigned this worker
    (``local_rank`` without Ray); returns that device index."""
    from mindspeed_rl.platform.device import device_type
    from mindspeed_rl.platform.distributed import ParallelLayout, init_distributed
    from mindspeed_rl.platform.ray_resources import assigned_device_index

    actor = worker.config.actor
    worker.layout = ParallelLayout(
        actor.tensor_model_parallel_size,
        actor.pipeline_model_parallel_size,
        actor.expert_model_parallel_size,
        actor.context_parallel_size,
        moe_tp_extend_ep=actor.moe_tp_extend_ep,
    )
    device_index = assigned_device_index(device_type(), local_rank)
    init_distributed(
        worker.layout, rank=worker.rank, world_size=world_size, local_rank=device_index,
        master_addr=master_addr, master_port=master_port, seed=actor.seed,
    )  # fmt: skip
    worker.device_index = device_index
    return device_index


def hf_assets(config: RunConfig) -> HFAssets:
    """Tokenizer, config and special tokens of ``megatron_training.tokenizer_name_or_path``."""
    import transformers

    from mindspeed_rl.rollout.base import eos_token_ids_of

    hf_dir = config.actor.tokenizer_name_or_path
    if hf_dir is None or not (Path(hf_dir) / "config.json").is_file():
        raise ValueError(
            f"megatron_training.tokenizer_name_or_path={hf_dir!r}: the rollout engine needs "
            "the Hugging Face model directory (config.json and tokenizer files)"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    eos = eos_token_ids_of(hf_dir) or [tokenizer.eos_token_id]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    return HFAssets(hf_dir, tokenizer, transformers.AutoConfig.from_pretrained(hf_dir), eos, pad)


def actor(worker, hf: HFAssets, total_optimizer_steps: int, resume: dict | None) -> None:
    """The Megatron actor, its starting weights or resumed state, the HF weight mapping and the
    TP gather of the weight sync."""
    from megatron.core import parallel_state

    from mindspeed_rl.checkpoint.training_state import hf_config_record
    from mindspeed_rl.models.param_mapping import WeightMapping
    from mindspeed_rl.workers.actor import MegatronActor

    config = worker.config
    actor_cfg = config.actor
    worker.dtype = torch.bfloat16 if actor_cfg.bf16 else torch.float32
    worker.actor = MegatronActor(
        config.model, actor_cfg, config.rl_config, worker.layout, total_optimizer_steps,
        worker.dtype, temperature=config.generate_config.sampling_config.temperature,
        initialize=actor_cfg.load is None, vocab_size=hf.config.vocab_size,
    )  # fmt: skip
    recorded = None  # the loaded checkpoint's hf_config record, carried into every save
    if actor_cfg.load is not None:
        # finetune: the weights of the latest checkpoint (or 'release'), iteration 0;
        # resume: everything of the given iteration (docs/resume.md)
        from mindspeed_rl.checkpoint.mcore_layout import read_tracker
        from mindspeed_rl.checkpoint.training_state import load_rank

        full = resume is not None
        recorded = load_rank(
            worker.actor, actor_cfg.load,
            resume["iteration"] if full else read_tracker(actor_cfg.load),
            worker._shard_layout(), worker._shard_position(),
            load_optim=full and not actor_cfg.no_load_optim,
            load_rng=full and not actor_cfg.no_load_rng,
        )["hf_config"]  # fmt: skip
        if full:
            worker.actor_version = resume["actor_version"]
    # what every checkpoint of this run records, so that mg -> hf needs no --hf-config-dir
    worker.hf_config_json = hf_config_record(recorded, hf.path)
    worker.mapping = WeightMapping(worker.actor.model_config, hf.config.vocab_size, worker.layout)
    worker.tp_gather = None
    if worker.layout.tensor_model_parallel_size > 1:
        from mindspeed_rl.platform.host_gather import host_gather_for

        worker.tp_gather = host_gather_for(parallel_state.get_tensor_model_parallel_group())


def reference(worker, hf: HFAssets) -> None:
    """The KL term's reference model, when one is configured."""
    from mindspeed_rl.workers.reference import ReferenceModel, needs_reference, reference_load_path

    config = worker.config
    worker.reference = None
    if needs_reference(config.rl_config):
        worker.reference = ReferenceModel(
            worker.actor.model_config, config.actor, config.rl_config, worker.layout,
            reference_load_path(config.actor, config.rl_config), worker._shard_layout(),
            worker._shard_position(), worker.dtype,
            temperature=config.generate_config.sampling_config.temperature,
            vocab_size=hf.config.vocab_size,
        )  # fmt: skip


def offloader(worker) -> None:
    from mindspeed_rl.workers.offload import TrainStateOffloader

    gen = worker.config.generate_config
    worker.offloader = TrainStateOffloader(
        worker.actor.model,
        worker.actor.optimizer,
        params=gen.offload_train_param,
        grads=gen.offload_train_grad,
        optimizer_state=gen.offload_train_optimizer,
    )


def engine(worker, hf: HFAssets, kind: str, device_type: str) -> None:
    """The rollout engine, created with the training state off the device (vLLM sizes its KV
    cache from the free memory); vLLM takes the device Ray assigned as its LOCAL_RANK."""
    gen = worker.config.generate_config
    if kind == "hf":
        import transformers

        from mindspeed_rl.config.platform_rules import hf_engine_problem
        from mindspeed_rl.platform.device import current_device
        from mindspeed_rl.rollout.factory import hf_engine_dtype
        from mindspeed_rl.rollout.hf_engine import HFRolloutEngine

        problem = hf_engine_problem(gen.infer_tensor_parallel_size)
        if problem:  # config/platform_rules.py, which --dry-run applies too
            raise ValueError(problem)
        model = transformers.AutoModelForCausalLM.from_config(
            hf.config, dtype=hf_engine_dtype(gen, device_type)
        )
        model.to(current_device())
        worker.engine = HFRolloutEngine(
            model, hf.eos_token_ids, hf.pad_token_id, max_num_seqs=gen.max_num_seqs
        )
    else:
        from mindspeed_rl.rollout.vllm_engine import VLLMRolloutEngine

        worker.engine = VLLMRolloutEngine(
            gen, hf.path, hf.path, hf.eos_token_ids, hf.pad_token_id, worker.config.actor.seed,
            device_type, local_rank=worker.device_index,
        )  # fmt: skip
    # vLLM's TP groups under external_launcher are consecutive ranks
    worker.returns_rollout = worker.rank % gen.infer_tensor_parallel_size == 0
