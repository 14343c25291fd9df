"""The training side of a preprocessed dataset: prompts and ground truths of one split.

``data_path`` is the preprocessing ``output_prefix``: the files are
``<data_path>_packed_<key>_document.{bin,idx}`` (see :mod:`mindspeed_rl.data.indexed_io`),
written by ``cli/preprocess_data.py`` or by the Ascend suite. ``split`` ('100,0,0', train /
valid / test weights) cuts the documents into three contiguous ranges with Megatron's rounding,
so both suites see the same prompts in each split.

The ground truth of a sample is the exact string given at preprocessing time: from
``labels_utf8`` when the file exists, else ``decode(labels)`` with the tokenizer (the Ascend
suite's files have no ``_utf8`` keys; preprocessing checked that decoding gives the string back
for every row it did not store verbatim).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mindspeed_rl.data.handlers import LABELS_KEY
from mindspeed_rl.data.indexed_io import INPUT_IDS_KEY, existing_keys, open_indexed, text_key
from mindspeed_rl.data.tokenization import decode_text

SplitName = Literal["train", "valid", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class PromptSample:
    """One prompt of the dataset.

    ``index`` is the document index in the files (stable across runs and splits: a prompt id).
    ``input_ids`` is int64 [P]; ``additional_ids[k]`` int64 [L_k] for each additional key;
    ``texts[k]`` the exact string of key ``k`` (``labels`` -> the ground truth).
    """

    index: int
    input_ids: np.ndarray
    additional_ids: dict[str, np.ndarray]
    texts: dict[str, str]

    @property
    def ground_truth(self) -> str:
        return self.texts[LABELS_KEY]


@dataclass(frozen=True)
class PromptBatch:
    """Prompts served together (one DP rank's share of a global batch), in order."""

    samples: list[PromptSample]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def indices(self) -> list[int]:
        return [s.index for s in self.samples]

    @property
    def prompt_ids(self) -> list[np.ndarray]:
        return [s.input_ids for s in self.samples]

    def texts(self, key: str) -> list[str]:
        """``texts(key)`` of every sample, e.g. ``texts('labels')`` = the ground truths."""
        return [s.texts[key] for s in self.samples]

    def left_padded(self, pad_token_id: int) -> tuple[Any, Any]:
        """``prompts`` int64 [B, P] left-padded to the longest prompt, and its mask [B, P].

        The batch contract's ``prompts`` layout: generation engines append to the right.
        """
        import torch

        width = max((len(ids) for ids in self.prompt_ids), default=0)
        prompts = torch.full((len(self.samples), width), pad_token_id, dtype=torch.int64)
        mask = torch.zeros((len(self.samples), width), dtype=torch.int64)
        for row, ids in enumerate(self.prompt_ids):
            if len(ids):
                prompts[row, width - len(ids) :] = torch.from_numpy(ids)
                mask[row, width - len(ids) :] = 1
        return prompts, mask


def split_document_ranges(split: str, num_documents: int) -> tuple[range, range, range]:
    """Train / valid / test document ranges of ``split`` ('100,0,0' or '98/1/1').

    Megatron's ``get_train_valid_test_split_`` arithmetic (also the Ascend suite's): weights are
    normalized, boundaries are cumulative ``round(weight * num_documents)``, then shifted so the
    last boundary is ``num_documents``. E.g. '80,10,10' over 10 documents -> [0,8), [8,9), [9,10);
    '1,1' over 3 -> [0,1), [1,3), [3,3) (Python rounds 1.5 to 2, the shift takes one back).
    """
    separator = "," if "," in split else "/"
    try:
        weights = [float(part) for part in split.split(separator) if part.strip()]
    except ValueError as exc:
        raise ValueError(f"split={split!r} must be numbers like '100,0,0'") from exc
    if not weights or len(weights) > 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"split={split!r} must be up to three non-negative weights with a positive sum, "
            f"like '100,0,0' (train, valid, test)"
        )
    weights += [0.0] * (3 - len(weights))
    total = sum(weights)
    bounds = [0]
    for weight in weights:
        bounds.append(bounds[-1] + int(round(weight / total * float(num_documents))))
    diff = bounds[-1] - num_documents
    bounds = [bounds[0]] + [b - diff for b in bounds[1:]]
    assert bounds[-1] == num_documents, f"split bounds {bounds} do not end at {num_documents}"
    return range(bounds[0], bounds[1]), range(bounds[1], bounds[2]), range(bounds[2], bounds[3])


class PromptDataset:
    """The prompts of one split of a preprocessed dataset (random access, memory-mapped).

    Args:
        data_path: the preprocessing ``output_prefix`` (training YAML ``data_path``).
        split: train / valid / test weights, e.g. '100,0,0'.
        split_name: which part to serve; validation uses 'valid' (the second weight).
        additional_keys: the YAML's ``dataset_additional_keys`` (e.g. ['labels']).
        tokenizer: decodes keys stored without exact text; required unless every additional key
            has its ``_utf8`` file.
    """

    def __init__(
        self,
        data_path: str | Path,
        split: str = "100,0,0",
        split_name: SplitName = "train",
        additional_keys: Sequence[str] = (LABELS_KEY,),
        tokenizer: Any = None,
    ) -> None:
        if split_name not in SPLIT_NAMES:
            raise ValueError(f"split_name={split_name!r}; valid: {', '.join(SPLIT_NAMES)}")
        self.data_path = str(data_path)
        self.additional_keys = tuple(additional_keys)
        self.tokenizer = tokenizer
        present = set(existing_keys(self.data_path))
        self._input_ids = open_indexed(self.data_path, INPUT_IDS_KEY)
        self._ids = {key: open_indexed(self.data_path, key) for key in self.additional_keys}
        self._texts = {
            key: open_indexed(self.data_path, text_key(key))
            for key in self.additional_keys
            if text_key(key) in present
        }
        num_documents = len(self._input_ids)
        for key, dataset in [*self._ids.items(), *self._texts.items()]:
            if len(dataset) != num_documents:
                raise ValueError(
                    f"data_path={self.data_path!r}: key {key!r} has {len(dataset)} samples but "
                    f"input_ids has {num_documents}; the files come from different runs, "
                    f"preprocess again"
                )
        undecodable = [key for key in self.additional_keys if key not in self._texts]
        if undecodable and tokenizer is None:
            raise ValueError(
                f"data_path={self.data_path!r}: keys {undecodable} are stored as token ids only; "
                f"pass the tokenizer used for preprocessing to decode them"
            )
        self.num_documents = num_documents
        self.documents = split_document_ranges(split, num_documents)[SPLIT_NAMES.index(split_name)]

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, position: int) -> PromptSample:
        """The ``position``-th prompt of this split (0 <= position < len(self))."""
        index = self.documents[position]
        additional_ids = {
            key: np.array(dataset[index], dtype=np.int64) for key, dataset in self._ids.items()
        }
        texts = {}
        for key in self.additional_keys:
            if key in self._texts:
                texts[key] = self._texts[key][index].tobytes().decode("utf-8")
            else:
                texts[key] = decode_text(self.tokenizer, additional_ids[key].tolist())
        return PromptSample(
            index=index,
            input_ids=np.array(self._input_ids[index], dtype=np.int64),
            additional_ids=additional_ids,
            texts=texts,
        )

    def batch(self, positions: Sequence[int]) -> PromptBatch:
        return PromptBatch([self[p] for p in positions])

    def iter_once(self, batch_size: int) -> Iterator[PromptBatch]:
        """One sequential pass in batches of ``batch_size`` (the last may be shorter)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))
