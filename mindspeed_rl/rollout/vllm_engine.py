"""Colocated vLLM rollout: vLLM on CUDA and vllm-ascend on NPU, one code path.

Every training rank hosts one vLLM worker in SPMD style (``external_launcher``): vLLM joins the
process group that training initialised, with its own inference TP. ``import vllm`` happens only
here; everything that translates our config lives in ``vllm_args.py`` and is tested on CPU.

Memory: ``sleep()`` drops the KV cache and the weights (level 2: the weights come back by sync
anyway), ``wake_up(tags)`` re-allocates them; the worker wakes the weights, syncs, releases the
actor's parameters and only then wakes the KV cache (workers/residency.py), so the KV cache and
the training state are never on the device together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch

from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.rollout.base import (
    ENGINE_TAGS,
    FinishReason,
    RolloutOutput,
    pack_responses,
    wake_tags,
)
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.rollout.vllm_args import engine_kwargs, sampling_kwargs

logger = logging.getLogger(__name__)


class VLLMRolloutEngine:
    def __init__(
        self,
        gen: GenerateConfig,
        model_path: str,
        tokenizer_path: str | None,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        seed: int,
    ) -> None:
        from vllm import LLM  # noqa: PLC0415  (vLLM is optional and heavy)

        self._llm = LLM(**engine_kwargs(gen, model_path, tokenizer_path, seed))
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.weight_version = 0
        self.awake: set[str] = set(ENGINE_TAGS)  # vLLM allocates both at start-up
        self.keeps_weights_asleep = False  # level 2 discards them

    def _model(self) -> torch.nn.Module:
        # external_launcher runs the worker in this process: the model is one attribute path away
        executor = self._llm.llm_engine.model_executor
        return executor.driver_worker.worker.model_runner.model

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        counted = []

        def counting(items):
            for item in items:
                counted.append(item[0])
                yield item

        self._model().load_weights(counting(weights))
        self.weight_version = version
        return len(counted)

    def sleep(self) -> None:
        if self.awake:
            self._llm.sleep(level=2)
            self.awake.clear()

    def wake_up(self, tags: list[str] | None = None) -> None:
        missing = [t for t in ENGINE_TAGS if t in wake_tags(tags) and t not in self.awake]
        if missing:
            self._llm.wake_up(tags=missing)
            self.awake.update(missing)

    def resident_bytes(self) -> dict[str, int | None]:
        # vLLM does not report its pools without private attribute chains: the worker's ledger
        # uses the device's allocated bytes instead
        return {"engine_weights": None, "kv_cache": None}

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> RolloutOutput:
        from vllm import SamplingParams as VLLMSamplingParams  # noqa: PLC0415
        from vllm.inputs import TokensPrompt  # noqa: PLC0415

        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
            VLLMSamplingParams(**sampling_kwargs(params, self.eos_token_ids)),
            use_tqdm=False,
        )
        sequences, log_probs, reasons, index = [], [], [], []
        for i, request in enumerate(outputs):
            for completion in request.outputs:
                ids = list(completion.token_ids)
                sequences.append(ids)
                log_probs.append(
                    [step[token].logprob for step, token in zip(completion.logprobs, ids)]
                )
                reason: FinishReason = "stop" if completion.finish_reason == "stop" else "length"
                reasons.append(reason)
                index.append(i)
        return pack_responses(sequences, log_probs, reasons, index, self.pad_token_id)
