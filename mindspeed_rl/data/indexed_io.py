"""The on-disk layout of a preprocessed dataset: Megatron indexed datasets, one per key.

For ``output_prefix = ./dataset/data`` and key ``input_ids`` the files are
``./dataset/data_packed_input_ids_document.bin`` / ``.idx``, written with megatron-core's
``IndexedDatasetBuilder`` exactly as the Ascend suite writes them: int32 tokens, one sequence per
document, one document per sample, so either suite reads the other's files. Keys:

- ``input_ids``: the templated prompt's token ids;
- ``attention_mask``: ones, one per prompt token (kept because the Ascend suite writes it);
- each ``dataset_additional_keys`` entry, tokenized: ``labels`` = the ground truth;
- ``<key>_utf8`` (uint8, only when needed): the exact UTF-8 bytes of that key's text for every
  sample. Written only when the tokenizer could not round-trip some row's text
  (``decode(encode(s)) != s``, e.g. NFC normalization); readers prefer it over decoding.

Only megatron-core's indexed-dataset I/O is used, imported lazily (importing ``megatron.core``
pulls in torch and prints warnings, which the readers/handlers of a preprocessing run don't need).

Writes are atomic: every file is first written under a temporary name in the output directory,
flushed to disk, and renamed into place only after all keys are complete. A crash before that
leaves earlier files untouched and nothing under the final names (only ``.*.tmp`` files); the old
``.idx`` files are all removed before the first rename, so a crash during the renames leaves keys
without an index (a loud error when read), never an old index next to new data. Temporary files
are named ``.<prefix>_packed_<key>_document.<pid>.<random>.{bin,idx}.tmp``; those of a process that
no longer runs (a SIGKILLed run) are removed by the next run into the same prefix, which says so.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TOKEN_DTYPE = np.int32  # what the Ascend suite writes; ids of 150k-vocabulary tokenizers fit
TEXT_DTYPE = np.uint8
TEXT_KEY_SUFFIX = "_utf8"
INPUT_IDS_KEY = "input_ids"
ATTENTION_MASK_KEY = "attention_mask"


def packed_path_prefix(output_prefix: str | Path, key: str) -> str:
    """``<output_prefix>_packed_<key>_document``: the path prefix of one key's .bin / .idx."""
    return f"{output_prefix}_packed_{key}_document"


def text_key(key: str) -> str:
    """Name of the key holding the exact UTF-8 text of ``key``."""
    return key + TEXT_KEY_SUFFIX


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(output_prefix: str | Path) -> list[Path]:
    """Delete the temporary files that writers into ``output_prefix`` left when they were killed
    (their pid no longer runs); files of a writer that still runs are kept. Returns those removed.
    Only this prefix's: another prefix's ``<name>_packed_...`` files never match."""
    prefix = Path(output_prefix)
    pattern = re.compile(
        rf"\.{re.escape(prefix.name)}_packed_(?:(?!_packed_).)+_document\.(\d+)\.[0-9a-f]{{8}}"
        r"\.(?:bin|idx)\.tmp"
    )
    removed = []
    for path in sorted(prefix.parent.glob(f".{glob.escape(prefix.name)}_packed_*.tmp")):
        match = pattern.fullmatch(path.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        logger.info(
            "removed %d temporary file(s) of an interrupted run into %s: %s",
            len(removed), output_prefix, ", ".join(p.name for p in removed),
        )  # fmt: skip
    return removed


class PackedDatasetWriter:
    """Writes one sample at a time to one indexed dataset per key, atomically on :meth:`commit`.

    Args:
        output_prefix: the dataset prefix (the training YAML's ``data_path``).
        token_keys: keys stored as int32 token ids, in write order.
        text_keys: keys stored as exact UTF-8 bytes (``text_key(k)`` names).

    Use as a context manager: leaving the block with an exception (or without ``commit``)
    deletes the temporary files and leaves existing files untouched.
    """

    def __init__(
        self, output_prefix: str | Path, token_keys: Iterable[str], text_keys: Iterable[str] = ()
    ) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.output_prefix = str(output_prefix)
        self._dtypes = {key: TOKEN_DTYPE for key in token_keys}
        self._dtypes.update({key: TEXT_DTYPE for key in text_keys})
        directory = Path(self.output_prefix).parent
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.output_prefix)
        self._temp_bins: dict[str, str] = {}
        self._builders: dict[str, Any] = {}
        self._committed = False
        try:
            for key, dtype in self._dtypes.items():
                # Not mkstemp: its 0600 mode would survive the rename; open() honours the umask.
                stem = Path(packed_path_prefix(self.output_prefix, key)).name
                temp_bin = str(directory / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.bin.tmp")
                self._temp_bins[key] = temp_bin
                self._builders[key] = IndexedDatasetBuilder(temp_bin, dtype=dtype)
        except BaseException:
            self.abort()
            raise

    def add(self, sample: Mapping[str, np.ndarray]) -> None:
        """Append one sample: a 1-D array per key (converted to the key's dtype)."""
        for key, builder in self._builders.items():
            array = sample[key]
            # add_document(array, [n]) == add_item + end_document, without a torch tensor.
            builder.add_document(array, [len(array)])

    def commit(self, keys: Iterable[str] | None = None) -> list[str]:
        """Finalize and move ``keys`` (default: all) into place; drop the others' temp files.

        Returns the final path prefixes written. Final files of dropped keys left by an earlier
        run into the same prefix are removed too (a stale ``labels_utf8`` must not outlive the
        ``labels`` it described).
        """
        keep = list(self._builders) if keys is None else list(keys)
        assert set(keep) <= set(self._builders), f"unknown keys {set(keep) - set(self._builders)}"
        temp_idx: dict[str, str] = {}
        for key, builder in self._builders.items():
            temp_idx[key] = self._temp_bins[key][: -len(".bin.tmp")] + ".idx.tmp"
            builder.finalize(temp_idx[key])
        for key in keep:
            _fsync(self._temp_bins[key])
            _fsync(temp_idx[key])
        finals = {key: packed_path_prefix(self.output_prefix, key) for key in self._builders}
        # First every old index goes: a crash during the renames below leaves keys without an
        # .idx (readers fail loudly), never an old .idx next to a new .bin or a mix of runs.
        for final in finals.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(final + ".idx")
        for key, final in finals.items():
            if key in keep:
                os.replace(self._temp_bins[key], final + ".bin")
                os.replace(temp_idx[key], final + ".idx")
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(final + ".bin")
        self._committed = True
        self.abort()  # removes what is left of dropped keys' temp files
        return [finals[key] for key in keep]

    def abort(self) -> None:
        """Delete all temporary files (idempotent)."""
        for builder in self._builders.values():
            with contextlib.suppress(Exception):
                builder.data_file.close()
        for temp_bin in self._temp_bins.values():
            for path in (temp_bin, temp_bin[: -len(".bin.tmp")] + ".idx.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)

    def __enter__(self) -> PackedDatasetWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.abort()


def existing_keys(output_prefix: str | Path) -> list[str]:
    """Keys with both files present under ``output_prefix`` (sorted)."""
    prefix = Path(f"{output_prefix}_packed_")
    keys = []
    if not prefix.parent.is_dir():
        return keys
    for idx in sorted(prefix.parent.glob(glob.escape(prefix.name) + "*_document.idx")):
        key = idx.name[len(prefix.name) : -len("_document.idx")]
        if idx.with_suffix(".bin").is_file():
            keys.append(key)
    return keys


def open_indexed(output_prefix: str | Path, key: str) -> Any:
    """megatron-core ``IndexedDataset`` of one key; ``ValueError`` naming the files if missing."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    path_prefix = packed_path_prefix(output_prefix, key)
    if not (os.path.isfile(path_prefix + ".bin") and os.path.isfile(path_prefix + ".idx")):
        found = existing_keys(output_prefix)
        raise ValueError(
            f"data_path={str(output_prefix)!r}: {path_prefix}.bin/.idx not found (keys present: "
            f"{found or 'none'}); run examples/data/preprocess_data.sh with output_prefix equal "
            f"to data_path, and list only keys it wrote in dataset_additional_keys"
        )
    return IndexedDataset(path_prefix)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
