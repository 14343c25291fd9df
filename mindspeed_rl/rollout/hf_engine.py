"""Rollout with a transformers model: the default engine on CPU, usable on any device.

A batched decoding loop of our own over transformers' KV cache (not ``model.generate``), so that
sampling follows ``sampling.py`` exactly and each sampled token's log-prob comes out of the same
logits it was sampled from. Prompts are left-padded inside the engine; finished rows stop
contributing tokens (they keep being fed padding until the whole batch is done or the cap is hit).

Memory, like vLLM's sleep level 2: ``sleep()`` releases the parameters' device storage without a
copy (the next weight sync overwrites them; buffers such as RoPE frequencies stay), and the KV
cache exists only inside ``generate``. ``wake_up(["weights"])`` re-grows the parameter storage in
place for the sync to fill.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence

import torch

from mindspeed_rl.models.tensor_layouts import Block, blocks_into, blocks_shape
from mindspeed_rl.platform.storage_stash import StorageStash, resident_bytes, unique_storages
from mindspeed_rl.rollout import fused_experts
from mindspeed_rl.rollout.base import (
    ENGINE_TAGS,
    FinishReason,
    RolloutOutput,
    RoundShape,
    eos_token_ids_of,
    pack_responses,
    round_shape_of,
    wake_tags,
)
from mindspeed_rl.rollout.sampling import SamplingParams, sample_next
from mindspeed_rl.rollout.seeds import prompt_seed

logger = logging.getLogger(__name__)


class HFRolloutEngine:
    """Generation with a ``transformers`` causal LM held in this process."""

    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        max_num_seqs: int = 256,
    ) -> None:
        if not eos_token_ids:
            raise ValueError("the rollout engine needs at least one EOS token id")
        self.model = model.eval()
        self.eos_token_ids = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long)
        self.pad_token_id = pad_token_id
        self.max_num_seqs = max_num_seqs
        self.weight_version = 0
        self.awake: set[str] = set(ENGINE_TAGS)
        self.keeps_weights_asleep = False  # a sync must follow every wake-up
        self.kv_cache_bytes = 0  # measured: the largest cache of the last generate call
        self._stash = StorageStash(pin_memory=False)  # releases without copies only
        self._unfilled = False  # weights re-grown by wake_up and not yet loaded
        self._weights = unique_storages(self.model.parameters())

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32, **kwargs):
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        eos_ids = eos_token_ids_of(path) or [tokenizer.eos_token_id]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        return cls(model, eos_ids, pad, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- weights -----------------------------------------------------------------------------

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        """Copy (HF name, tensor) pairs into the model in place; unknown names are an error."""
        return self.load_weight_blocks(((name, [t]) for name, t in weights), version)

    def load_weight_blocks(self, items: Iterable[tuple[str, list[Block]]], version: int) -> int:
        """Copy (HF name, row blocks) items (``weight_sync.iter_synced_blocks``) into the model
        in place, each block straight into its rows (dtype and device converted on the way);
        unknown names are an error. Per-expert names fill the fused expert parameters of
        transformers 5 (``fused_experts``)."""
        params = dict(self.model.named_parameters())
        params.update(dict(self.model.named_buffers()))
        copies: dict[str, int] = {}  # parameter name -> tensors copied into it
        with torch.no_grad():
            for name, blocks in items:
                key, target = name, params.get(name)
                if target is None and (slot := fused_experts.expert_slot(name, params)):
                    key, target = slot  # a view of the fused parameter
                if target is None:
                    raise KeyError(f"rollout model has no parameter '{name}'")
                shape = blocks_shape(blocks, name)
                if target.shape != shape:
                    raise ValueError(
                        f"'{name}': engine shape {tuple(target.shape)} != "
                        f"synced shape {tuple(shape)}"
                    )
                blocks_into(blocks, target)
                copies[key] = copies.get(key, 0) + 1
        if self._unfilled:
            # after a sleep the storage holds nothing: a parameter the sync skipped is garbage
            missing = [
                n
                for n, p in self.model.named_parameters()
                if copies.get(n, 0) < fused_experts.copies_to_fill(n, p)
            ]
            if missing:
                raise RuntimeError(
                    f"weight sync after a wake-up left {len(missing)} parameter(s) unset: "
                    f"{missing[:3]}"
                )
            self._unfilled = False
        self.weight_version = version
        return sum(copies.values())

    def sleep(self) -> None:
        """Release the weights' device storage (no copy) and the allocator's cache."""
        from mindspeed_rl.platform.device import empty_cache

        self._stash.release(self._weights, keep=False)
        self.awake.clear()
        empty_cache()

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-grow the weights' storage (``weights``; contents unspecified until the next
        ``load_weights``) and allow generation (``kv_cache``: allocated per call)."""
        wanted = wake_tags(tags)
        if "weights" in wanted and "weights" not in self.awake:
            self._unfilled = self._stash.restore(self._weights) > 0
        self.awake |= wanted

    def resident_bytes(self) -> dict[str, int]:
        return {
            "engine_weights": resident_bytes(self._weights),
            # the cache lives inside generate(); while awake, its peak of the last call
            "kv_cache": self.kv_cache_bytes if "kv_cache" in self.awake else 0,
        }

    # --- generation --------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        shape: RoundShape | None = None,
    ) -> RolloutOutput:
        """``params.n`` samples per prompt, or ``shape``'s per-prompt counts and caps. With
        ``shape.finish_share`` < 1 the decoding loop of a chunk (at most ``max_num_seqs`` rows)
        stops at the first step where that share of its rows is done and every must-finish row
        is: this loop is ours, so stopping early costs nothing and keeps every token so far."""
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if self.awake != set(ENGINE_TAGS) or self._unfilled:
            raise RuntimeError(
                f"generate needs the engine awake with synced weights (awake: "
                f"{sorted(self.awake)}, weights loaded since the wake-up: {not self._unfilled})"
            )
        shape = round_shape_of(len(prompts), params, shape)
        # one stream per row (rollout/seeds.py): sample k of prompt i draws from
        # prompt_seed(seed, i) + k, as vLLM numbers the samples of a seeded request
        call_seed = params.seed if params.seed is not None else secrets.randbits(62)
        rows = [i for i, count in enumerate(shape.samples) for _ in range(count)]
        streams = [
            torch.Generator().manual_seed(prompt_seed(call_seed, i) + k)
            for i, count in enumerate(shape.samples)
            for k in range(count)
        ]
        self.kv_cache_bytes = 0
        sequences: list[list[int]] = []
        log_probs: list[torch.Tensor] = []
        reasons: list[FinishReason] = []
        start = 0
        for chunk in _chunks(prompts, shape, self.max_num_seqs):
            rows_in_chunk = sum(count for _, count, _, _ in chunk)
            generators = streams[start : start + rows_in_chunk]
            seqs, lps, why = self._generate_chunk(chunk, params, generators, shape.finish_share)
            sequences += seqs
            log_probs += lps
            reasons += why
            start += rows_in_chunk
        return pack_responses(sequences, log_probs, reasons, rows, self.pad_token_id)

    @torch.no_grad()
    def _generate_chunk(
        self,
        chunk: list[tuple[list[int], int, int, bool]],
        params: SamplingParams,
        generators: list[torch.Generator],
        finish_share: float = 1.0,
    ) -> tuple[list[list[int]], list[torch.Tensor], list[FinishReason]]:
        """``chunk``: (prompt, rows, cap, must_finish) entries. Each prompt is prefilled once and its KV cache,
        last logits and mask are repeated for its rows: the n samples of a prompt share the
        prefill, as vLLM's prefix cache makes them share it (identical rows of a batched
        forward compute identical values, so the samples are those of a per-row prefill)."""
        device = self.device
        prompts = [p for p, _, _, _ in chunk]
        unique, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((unique, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((unique, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            attention[i, width - len(p) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        eos = self.eos_token_ids.to(device)
        counts = torch.tensor([count for _, count, _, _ in chunk])
        rows_of = torch.repeat_interleave(torch.arange(unique), counts).to(device)
        batch = int(rows_of.numel())
        caps = torch.repeat_interleave(torch.tensor([c for _, _, c, _ in chunk]), counts)
        caps = caps.to(device)
        must = torch.repeat_interleave(torch.tensor([m for _, _, _, m in chunk]), counts)
        must = must.to(device)
        steps = int(caps.max())

        # each row's draws for every step at once, from its own stream: one call per row, not
        # one per row and step; always params.max_tokens of them, so a row's k-th draw does not
        # depend on its cap (a round of partial rollout samples what a whole call would)
        uniforms = (
            None
            if params.greedy
            else torch.stack([torch.rand(params.max_tokens, generator=g) for g in generators])
        )
        tokens = torch.empty((batch, steps), dtype=torch.long, device=device)
        token_lp = torch.zeros((batch, steps), dtype=torch.float32, device=device)
        lengths = caps.clone()
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        cache = None
        step_ids, step_positions = input_ids, positions
        for step in range(steps):
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=step_positions,
                past_key_values=cache,
                use_cache=True,
                # only the last position is sampled: the prefill's [B, P, V] logits are never made
                logits_to_keep=1,
            )
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            if step == 0 and unique != batch:  # the prefill: from prompts to rows
                cache.reorder_cache(rows_of)
                logits, attention = logits[rows_of], attention[rows_of]
                step_positions = step_positions[rows_of]
            next_tokens, next_lp = sample_next(
                logits, params,
                uniforms=None if uniforms is None else uniforms[:, step],
            )  # fmt: skip
            next_tokens = next_tokens.masked_fill(done, self.pad_token_id)
            tokens[:, step], token_lp[:, step] = next_tokens, next_lp
            finished_now = ~done & (torch.isin(next_tokens, eos) | (caps <= step + 1))
            lengths = torch.where(finished_now, step + 1, lengths)
            done |= finished_now
            if bool(done.all()):
                break
            if finish_share < 1 and _threshold_reached(done, must, finish_share):
                lengths = torch.where(done, lengths, step + 1)  # cut: the tokens so far
                break
            step_ids = next_tokens.unsqueeze(-1)
            step_positions = step_positions[:, -1:] + 1
            attention = torch.cat([attention, (~done).long().unsqueeze(-1)], dim=-1)
        self.kv_cache_bytes = max(self.kv_cache_bytes, _cache_bytes(cache))
        lengths, tokens, token_lp = lengths.cpu(), tokens.cpu(), token_lp.cpu()
        sequences = [tokens[i, : lengths[i]].tolist() for i in range(batch)]
        log_probs = [token_lp[i, : lengths[i]] for i in range(batch)]
        eos_ids = set(self.eos_token_ids.tolist())
        reasons: list[FinishReason] = [
            "stop" if seq and seq[-1] in eos_ids else "length" for seq in sequences
        ]
        return sequences, log_probs, reasons


def _threshold_reached(done: torch.Tensor, must: torch.Tensor, share: float) -> bool:
    """A share of the rows is done and every must-finish row is."""
    return bool(done.float().mean() >= share) and bool(done[must].all())


def _chunks(
    prompts: Sequence[Sequence[int]], shape: RoundShape, max_rows: int
) -> list[list[tuple[list[int], int, int, bool]]]:
    """Rows in prompt order, ``shape.samples[i]`` of prompt i, cut into chunks of at most
    ``max_rows`` rows as (prompt, rows, cap, must_finish) entries. A prompt's rows stay in one
    chunk (one prefill for them all) unless they are more than ``max_rows``."""
    chunks: list[list[tuple[list[int], int, int, bool]]] = []
    current, size = [], 0
    for prompt, n, cap, must in zip(prompts, shape.samples, shape.max_tokens, shape.must_finish):
        pieces = [n] if n <= max_rows else [max_rows] * (n // max_rows) + [n % max_rows]
        for rows in filter(None, pieces):
            if size + rows > max_rows:
                chunks.append(current)
                current, size = [], 0
            current.append((list(prompt), rows, cap, must))
            size += rows
    if current:
        chunks.append(current)
    return chunks


def _cache_bytes(cache) -> int:
    """Bytes of a transformers KV cache (``DynamicCache.layers``; older ``key_cache`` lists)."""
    if cache is None:
        return 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        tensors = [t for layer in layers for t in (layer.keys, layer.values) if t is not None]
    else:
        tensors = list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
