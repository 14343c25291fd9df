"""Do a Megatron checkpoint and a Hugging Face model compute the same logits?

The Megatron side runs in the checkpoint's own layout: TP x PP x EP processes (spawned, gloo,
CPU), each loading its own ``mp_rank_*`` shard into a ``GPTModel`` built by ``models.gpt_builder``
-- the model a training run would build -- with explicit causal masks (megatron-core's default
mask path assumes CUDA). Pipeline stages pass hidden states with point-to-point sends; the last
stage gathers its vocabulary-parallel logits over TP. The Hugging Face side is
``AutoModelForCausalLM`` in fp32. Both see the same token ids; the report gives the largest
absolute difference, the same relative to the largest |logit|, and top-1 agreement.

Grouped-GEMM expert checkpoints are run as ``SequentialMLP`` (same shards, re-laid out by
``expert_layout.to_sequential`` through ``training_state.load_model``), since no grouped GEMM kernel exists on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from pathlib import Path

import torch

from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.checkpoint.mcore_to_hf import plan_mcore_to_hf
from mindspeed_rl.config.schema import ModelConfig
from mindspeed_rl.platform.device import DEVICE_ENV


@dataclasses.dataclass(frozen=True)
class MegatronLogitsCase:
    """Everything one rank needs (picklable, sent to spawned processes)."""

    files: mcore_layout.CheckpointFiles
    model: ModelConfig  # padded_vocab_size and moe_grouped_gemm as stored in the checkpoint
    vocab_size: int  # Hugging Face rows: padding is cut off the gathered logits
    tokens: torch.Tensor  # [B, S] int64


@dataclasses.dataclass(frozen=True)
class LogitsReport:
    max_abs_diff: float
    max_rel_diff: float  # max_abs_diff / max |reference logit|
    top1_agreement: float  # share of positions whose argmax agrees
    layout: mcore_layout.ShardLayout
    tokens_shape: tuple[int, int]

    def passed(self, tolerance: float) -> bool:
        return self.max_abs_diff <= tolerance

    def __str__(self) -> str:
        lay = self.layout
        return (
            f"logits over {self.tokens_shape[0]}x{self.tokens_shape[1]} tokens, Megatron "
            f"TP={lay.tp} PP={lay.pp} EP={lay.ep} vs transformers (fp32): max abs diff "
            f"{self.max_abs_diff:.3e}, max rel diff {self.max_rel_diff:.3e}, "
            f"top-1 agreement {100 * self.top1_agreement:.1f}%"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def causal_mask(batch: int, seq: int) -> torch.Tensor:
    """Megatron's boolean attention mask ``[B, 1, S, S]``: True where attention is blocked."""
    return torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1).expand(batch, 1, seq, seq)


def megatron_rank_logits(
    rank: int, world_size: int, case: MegatronLogitsCase, master_port: int
) -> torch.Tensor | None:
    """Run the Megatron side on this rank; returns ``[B, S, vocab]`` logits on the one rank
    that reports them (last stage, TP rank 0, DP rank 0), None elsewhere."""
    from mindspeed_rl.checkpoint.training_state import load_model
    from mindspeed_rl.models.gpt_builder import build_gpt_model, with_sequential_experts
    from mindspeed_rl.platform.distributed import (
        ParallelLayout,
        destroy_distributed,
        init_distributed,
    )

    lay = case.files.layout
    layout = ParallelLayout(lay.tp, lay.pp, lay.ep, pipeline_layers=lay.pipeline_layers)
    init_distributed(layout, rank=rank, world_size=world_size, master_port=master_port)
    try:
        from megatron.core import parallel_state as ps

        tp_rank = ps.get_tensor_model_parallel_rank()
        pp_rank = ps.get_pipeline_model_parallel_rank()
        ep_rank = ps.get_expert_model_parallel_rank() if case.model.num_experts else 0
        # on CPU the builder picks the allgather dispatcher (models/moe_dispatch.py)
        model = build_gpt_model(with_sequential_experts(case.model), layout)
        # the training load path: shapes checked, grouped experts re-laid out per expert
        load_model(model, case.files.root, case.files.iteration, lay, (tp_rank, pp_rank, ep_rank))
        model.eval()
        return _forward(model, case, ps)
    finally:
        destroy_distributed()


def _forward(model, case: MegatronLogitsCase, ps) -> torch.Tensor | None:
    tokens = case.tokens
    batch, seq = tokens.shape
    positions = torch.arange(seq).unsqueeze(0).expand(batch, seq)
    config = model.config
    with torch.no_grad():
        if not ps.is_pipeline_first_stage():
            rows = seq // config.tensor_model_parallel_size if config.sequence_parallel else seq
            hidden = torch.empty(rows, batch, config.hidden_size, dtype=config.params_dtype)
            torch.distributed.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
            model.set_input_tensor(hidden)
        output = model(tokens, positions, causal_mask(batch, seq))
        if not ps.is_pipeline_last_stage():
            torch.distributed.send(
                output.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank()
            )
            return None
        group = ps.get_tensor_model_parallel_group()
        parts = [torch.empty_like(output) for _ in range(ps.get_tensor_model_parallel_world_size())]
        torch.distributed.all_gather(parts, output.contiguous(), group=group)
    if ps.get_tensor_model_parallel_rank() != 0 or ps.get_data_parallel_rank() != 0:
        return None
    return torch.cat(parts, dim=-1)[..., : case.vocab_size].float()


def _spawn_entry(rank: int, world_size: int, case, port: int, out_dir: str) -> None:
    # the check runs on CPU over gloo on every host, accelerators or not (see module docstring)
    os.environ[DEVICE_ENV] = "cpu"
    threads = max(1, (os.cpu_count() or 1) // world_size)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    logits = megatron_rank_logits(rank, world_size, case, port)
    if logits is not None:
        torch.save(logits, os.path.join(out_dir, "logits.pt"))


def megatron_logits(case: MegatronLogitsCase) -> torch.Tensor:
    """Spawn TP x PP x EP CPU processes and return the gathered ``[B, S, vocab]`` logits."""
    import torch.multiprocessing as mp

    lay = case.files.layout
    world = lay.tp * lay.pp * lay.ep
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.start_processes(
                _spawn_entry,
                args=(world, case, free_port(), out_dir),
                nprocs=world,
                join=True,
                start_method="spawn",
            )
        except mp.ProcessRaisedException as err:
            last = str(err).strip().splitlines()[-1]
            raise RuntimeError(f"a Megatron rank failed: {last}") from err
        return torch.load(os.path.join(out_dir, "logits.pt"), weights_only=True)


def hf_logits(hf_dir: str | Path, tokens: torch.Tensor) -> torch.Tensor:
    """Float32 logits ``[B, S, vocab]`` of the transformers model in ``hf_dir``."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(tokens).logits.float()


def compare_logits(
    logits: torch.Tensor,
    reference: torch.Tensor,
    layout: mcore_layout.ShardLayout,
    valid: torch.Tensor | None = None,
) -> LogitsReport:
    """Compare ``[B, S, V]`` logits at the positions where ``valid`` ``[B, S]`` is True."""
    if logits.shape != reference.shape:
        raise ValueError(f"logits shapes differ: {list(logits.shape)} vs {list(reference.shape)}")
    shape = tuple(reference.shape[:2])
    if valid is not None:
        logits, reference = logits[valid], reference[valid]
    diff = (logits - reference).abs().max().item()
    scale = reference.abs().max().item() or 1.0
    agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return LogitsReport(diff, diff / scale, agree, layout, shape)


def encode_prompts(hf_dir: str | Path, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B, S]`` of ``prompts`` (right-padded with id 0) and the mask ``[B, S]`` of
    real tokens, with the tokenizer saved in ``hf_dir``."""
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    except (OSError, ValueError) as err:
        raise ValueError(f"{hf_dir}: no usable tokenizer for the prompts ({err})") from err
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if not all(encoded):
        raise ValueError("an empty prompt has no tokens to compare")
    seq = max(len(e) for e in encoded)
    tokens = torch.zeros(len(encoded), seq, dtype=torch.long)
    valid = torch.zeros(len(encoded), seq, dtype=torch.bool)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = torch.tensor(ids)
        valid[row, : len(ids)] = True
    return tokens, valid


def check_logits(
    mcore_dir: str | Path,
    hf_dir: str | Path,
    prompts: list[str] | None = None,
    seq_length: int = 32,
    batch: int = 2,
    seed: int = 0,
) -> LogitsReport:
    """Compare the Megatron checkpoint in ``mcore_dir`` with the Hugging Face model in ``hf_dir``.

    Inputs are ``prompts`` (encoded with ``hf_dir``'s tokenizer; right padding is not compared),
    or else ``batch`` x ``seq_length`` random token ids drawn with ``seed``.
    """
    plan = plan_mcore_to_hf(Path(mcore_dir), hf_config_dir=Path(hf_dir))
    mapping, lay = plan.mapping, plan.files.layout
    valid = None
    if prompts:
        tokens, valid = encode_prompts(hf_dir, prompts)
        if tokens.max() >= mapping.vocab_size:
            raise ValueError(
                f"{hf_dir}: the tokenizer produced id {tokens.max().item()}, beyond the model's "
                f"{mapping.vocab_size} embedding rows: is the tokenizer from this model?"
            )
    else:
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, mapping.vocab_size, (batch, seq_length), generator=generator)
    case = MegatronLogitsCase(plan.files, mapping.model, mapping.vocab_size, tokens)
    logits = megatron_logits(case)
    return compare_logits(logits, hf_logits(hf_dir, tokens), lay, valid)
