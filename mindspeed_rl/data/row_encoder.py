"""Turning raw rows into the arrays written per sample: handler -> template -> tokenizer.

This is the per-row work of preprocessing, the part that runs in ``workers`` processes. Its
output depends only on the row (never on which chunk or process handled it), which is what
makes the written files byte-identical for any worker count.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mindspeed_rl.data.handlers import HandledRow, InstructionHandler, Rejection, build_handler
from mindspeed_rl.data.indexed_io import (
    ATTENTION_MASK_KEY,
    INPUT_IDS_KEY,
    TEXT_DTYPE,
    TOKEN_DTYPE,
    text_key,
)
from mindspeed_rl.data.readers import RowChunk, materialize
from mindspeed_rl.data.templates import PromptFormatter, load_prompt_formatter
from mindspeed_rl.data.tokenization import decode_texts, encode_texts, load_tokenizer


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a worker process needs to rebuild a :class:`RowEncoder` (small, picklable)."""

    tokenizer_name_or_path: str
    handler_name: str
    map_keys: Mapping[str, str] | None
    additional_keys: tuple[str, ...]
    prompt_type: str
    prompt_type_path: Path
    seq_length: int | None


@dataclass(frozen=True)
class Written:
    """The row is written; ``verbatim_keys``: additional keys the tokenizer did not round-trip."""

    verbatim_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class TooLong:
    """The templated prompt has more tokens than ``seq_length``: filtered, not an error."""

    num_tokens: int


Outcome = Written | Rejection | TooLong


@dataclass(frozen=True)
class EncodedChunk:
    """What one chunk of rows turned into; cheap to send between processes.

    ``outcomes`` has one entry per input row. For each output key, ``data[key]`` concatenates
    the written rows' arrays in row order and ``lengths[key]`` (int64 [W]) splits it back:
    ``input_ids`` and ``attention_mask`` (int32, [P] per row), each additional key's token ids
    (int32) and ``<key>_utf8`` (uint8, the exact text).
    """

    outcomes: list[Outcome]
    data: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        """The written rows, in order, as ``key -> 1-D array`` views."""
        offsets = {key: np.concatenate(([0], np.cumsum(n))) for key, n in self.lengths.items()}
        num_written = sum(isinstance(o, Written) for o in self.outcomes)
        for j in range(num_written):
            yield {key: self.data[key][offsets[key][j] : offsets[key][j + 1]] for key in self.data}


class RowEncoder:
    """Encodes chunks of rows; built once per process.

    Args:
        handler: row -> conversation + texts.
        formatter: conversation -> prompt text.
        tokenizer: a Hugging Face fast tokenizer.
        seq_length: prompts longer than this (in tokens) are filtered; ``None`` keeps all.
    """

    def __init__(
        self,
        handler: InstructionHandler,
        formatter: PromptFormatter,
        tokenizer: Any,
        seq_length: int | None,
    ) -> None:
        self.handler = handler
        self.formatter = formatter
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.additional_keys = handler.additional_keys

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> RowEncoder:
        tokenizer = load_tokenizer(spec.tokenizer_name_or_path)
        return cls(
            handler=build_handler(spec.handler_name, spec.map_keys, spec.additional_keys),
            formatter=load_prompt_formatter(spec.prompt_type, tokenizer, spec.prompt_type_path),
            tokenizer=tokenizer,
            seq_length=spec.seq_length,
        )

    def encode_chunk(self, chunk: RowChunk) -> EncodedChunk:
        """Outcomes of a chunk of rows, in order; tokenizes in one batched call per key."""
        rows = materialize(chunk)
        outcomes: list[Outcome | None] = [None] * len(rows)
        valid: list[tuple[int, HandledRow, str]] = []
        for position, row in enumerate(rows):
            handled = self.handler(row) if isinstance(row, dict) else row
            if isinstance(handled, Rejection):
                outcomes[position] = handled
                continue
            try:
                prompt = self.formatter.render(handled.messages)
            except Exception as exc:  # a chat template's raise_exception(): bad turn structure
                outcomes[position] = Rejection("malformed_messages", f"chat template: {exc}")
                continue
            valid.append((position, handled, prompt))

        prompt_ids = encode_texts(self.tokenizer, [prompt for _, _, prompt in valid])
        texts = {key: [h.texts[key] for _, h, _ in valid] for key in self.additional_keys}
        ids = {key: encode_texts(self.tokenizer, texts[key]) for key in self.additional_keys}
        decoded = {key: decode_texts(self.tokenizer, ids[key]) for key in self.additional_keys}

        kept: list[int] = []  # indices into `valid` of the rows to write
        for j, (position, _, _) in enumerate(valid):
            if not prompt_ids[j]:
                outcomes[position] = Rejection("empty_after_templating")
            elif self.seq_length is not None and len(prompt_ids[j]) > self.seq_length:
                outcomes[position] = TooLong(len(prompt_ids[j]))
            else:
                verbatim = tuple(k for k in self.additional_keys if decoded[k][j] != texts[k][j])
                outcomes[position] = Written(verbatim)
                kept.append(j)
        assert all(o is not None for o in outcomes), "every row must get an outcome"

        data, lengths = {}, {}
        data[INPUT_IDS_KEY], lengths[INPUT_IDS_KEY] = _concat([prompt_ids[j] for j in kept])
        data[ATTENTION_MASK_KEY] = np.ones_like(data[INPUT_IDS_KEY])
        lengths[ATTENTION_MASK_KEY] = lengths[INPUT_IDS_KEY]
        for key in self.additional_keys:
            data[key], lengths[key] = _concat([ids[key][j] for j in kept])
            encoded = [texts[key][j].encode("utf-8") for j in kept]
            data[text_key(key)] = np.frombuffer(b"".join(encoded), dtype=TEXT_DTYPE)
            lengths[text_key(key)] = np.array([len(b) for b in encoded], dtype=np.int64)
        return EncodedChunk(outcomes, data, lengths)  # type: ignore[arg-type]


def _concat(id_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(int32 concatenation, int64 lengths) of token-id lists."""
    lengths = np.array([len(ids) for ids in id_lists], dtype=np.int64)
    flat = np.fromiter(
        itertools.chain.from_iterable(id_lists), dtype=TOKEN_DTYPE, count=int(lengths.sum())
    )
    return flat, lengths


# Per-process encoder of pool workers (set by init_worker, used by encode_in_worker).
_WORKER_ENCODER: RowEncoder | None = None


def init_worker(spec: EncoderSpec) -> None:
    """Pool initializer: one single-threaded tokenizer per process (``workers`` = cores used)."""
    import os

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # this process is one of `workers` cores
    global _WORKER_ENCODER
    _WORKER_ENCODER = RowEncoder.from_spec(spec)


def encode_in_worker(chunk: RowChunk) -> EncodedChunk:
    assert _WORKER_ENCODER is not None, "init_worker must run first"
    return _WORKER_ENCODER.encode_chunk(chunk)
