"""Colocated vLLM rollout: vLLM on CUDA and vllm-ascend on NPU, one code path.

Every training rank hosts one vLLM worker in SPMD style (``external_launcher``): vLLM joins the
process group that training initialised, with its own inference TP. ``import vllm`` happens only
here; everything that translates our config lives in ``vllm_args.py`` and is tested on CPU.

Memory: ``sleep()`` drops the KV cache and the weights (level 2: the weights come back by sync
anyway), ``wake_up()`` re-allocates them; the trainer syncs weights between the two halves of the
wake-up (weights first, then the KV cache) so peak memory stays below training's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch

from mindspeed_rl.config.schema import GenerateConfig
from mindspeed_rl.rollout.base import FinishReason, RolloutOutput, pack_responses
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
        self._asleep = False

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
        if not self._asleep:
            self._llm.sleep(level=2)
            self._asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        if self._asleep:
            self._llm.wake_up(tags=tags)
            self._asleep = tags is not None and "kv_cache" not in tags

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
