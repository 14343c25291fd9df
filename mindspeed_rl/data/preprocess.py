"""Dataset preprocessing: a raw parquet / json / jsonl file -> Megatron indexed datasets.

``preprocess_dataset(config)`` is what ``cli/preprocess_data.py`` runs:

1. checks, before any row is processed: handler and ``map_keys``, input file and its columns,
   tokenizer, template, output directory. Each failure is one ``ValueError`` naming the key;
2. rows are read in chunks of :data:`CHUNK_ROWS` and encoded (handler -> template -> tokenizer)
   in-process (``workers: 1``) or by a pool of ``workers`` processes, at most
   ``2 * workers`` chunks in flight, results consumed in row order: output is byte-identical
   for any worker count;
3. each sample is written to one indexed dataset per key (see :mod:`indexed_io`), atomically;
4. progress every ``log_interval`` rows (count, rate, ETA) and a final summary: rows read,
   written, filtered by ``seq_length``, rejected per reason with the first row indices, and ground
   truths stored verbatim because the tokenizer could not round-trip them.

Bad rows never stop the run; a run that writes no row at all fails without output.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.pool
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mindspeed_rl.data.handlers import REJECTION_REASONS, build_handler
from mindspeed_rl.data.indexed_io import (
    ATTENTION_MASK_KEY,
    INPUT_IDS_KEY,
    PackedDatasetWriter,
    text_key,
)
from mindspeed_rl.data.preprocess_config import PreprocessConfig, check_output_prefix
from mindspeed_rl.data.readers import RowChunk, RowSource, open_rows
from mindspeed_rl.data.row_encoder import (
    EncodedChunk,
    EncoderSpec,
    Outcome,
    RowEncoder,
    TooLong,
    Written,
    encode_in_worker,
    init_worker,
)
from mindspeed_rl.data.templates import load_prompt_formatter
from mindspeed_rl.data.tokenization import load_tokenizer

logger = logging.getLogger(__name__)

CHUNK_ROWS = 256  # rows per unit of work: large enough to amortize IPC, small for even load
FIRST_ROWS_SHOWN = 5  # row indices listed per rejection reason in the summary
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"  # the Rust tokenizer's thread-pool switch


@dataclass
class PreprocessSummary:
    """Counts of one run; ``format()`` is the text logged at the end.

    Row indices are 0-based positions in the input file (blank JSON lines not counted).
    """

    read: int = 0
    written: int = 0
    filtered_by_seq_length: int = 0
    filtered_rows: list[int] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_rows: dict[str, list[int]] = field(default_factory=dict)
    verbatim: dict[str, int] = field(default_factory=dict)
    verbatim_rows: dict[str, list[int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    def add(self, row_index: int, outcome: Outcome) -> None:
        self.read += 1
        if isinstance(outcome, Written):
            self.written += 1
            for key in outcome.verbatim_keys:
                self.verbatim[key] = self.verbatim.get(key, 0) + 1
                _remember(self.verbatim_rows.setdefault(key, []), row_index)
        elif isinstance(outcome, TooLong):
            self.filtered_by_seq_length += 1
            _remember(self.filtered_rows, row_index)
        else:
            self.rejected[outcome.reason] = self.rejected.get(outcome.reason, 0) + 1
            _remember(self.rejected_rows.setdefault(outcome.reason, []), row_index)

    def format(self, seq_length: int | None = None) -> str:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"rows read: {self.read} in {self.seconds:.1f} s ({rate:.0f} rows/s)",
            f"rows written: {self.written}",
            (
                f"filtered (prompt longer than seq_length={seq_length}): "
                if seq_length is not None
                else "filtered (seq_length not set): "
            )
            + str(self.filtered_by_seq_length)
            + _first_rows(self.filtered_rows, self.filtered_by_seq_length),
            f"rejected: {self.num_rejected}",
        ]
        for reason, count in sorted(self.rejected.items()):
            lines.append(
                f"  {reason} ({REJECTION_REASONS[reason]}): {count}"
                + _first_rows(self.rejected_rows[reason], count)
            )
        for key, count in sorted(self.verbatim.items()):
            lines.append(
                f"{key}: {count} texts the tokenizer does not round-trip, kept verbatim in "
                f"{text_key(key)}" + _first_rows(self.verbatim_rows[key], count)
            )
        lines += [f"wrote {path}.bin/.idx" for path in self.files]
        return "\n".join(lines)


def preprocess_dataset(config: PreprocessConfig) -> PreprocessSummary:
    """Run the whole pipeline for ``config``; returns the summary (also logged)."""
    handler = build_handler(config.handler_name, config.map_keys, config.dataset_additional_keys)
    check_output_prefix(config.output_prefix)
    source = open_rows(config.input)
    missing = [c for c in handler.required_columns() if c not in source.columns]
    if missing:
        raise ValueError(
            f"input={str(config.input)!r} has no column(s) {missing} (needed by map_keys / "
            f"dataset_additional_keys of {config.handler_name}); its columns: {source.columns}"
        )
    tokenizer = load_tokenizer(config.tokenizer_name_or_path)
    formatter = load_prompt_formatter(config.prompt_type, tokenizer, config.prompt_type_path)
    spec = EncoderSpec(
        tokenizer_name_or_path=config.tokenizer_name_or_path,
        handler_name=config.handler_name,
        map_keys=config.map_keys,
        additional_keys=config.dataset_additional_keys,
        prompt_type=config.prompt_type,
        prompt_type_path=config.prompt_type_path,
        seq_length=config.seq_length,
    )
    additional = config.dataset_additional_keys
    logger.info(
        "preprocessing %s (%s, %d rows) with %s, prompt_type=%s, tokenizer=%s, workers=%d -> %s",
        source.path,
        source.format,
        source.num_rows,
        config.handler_name,
        config.prompt_type,
        config.tokenizer_name_or_path,
        config.workers,
        f"{config.output_prefix}_packed_*_document.bin/.idx",
    )
    summary = PreprocessSummary()
    with PackedDatasetWriter(
        config.output_prefix,
        token_keys=[INPUT_IDS_KEY, ATTENTION_MASK_KEY, *additional],
        text_keys=[text_key(key) for key in additional],
    ) as writer:
        encoder = RowEncoder(handler, formatter, tokenizer, config.seq_length)
        start = time.perf_counter()
        next_log = config.log_interval
        for first_row, encoded in _encode_chunks(source, encoder, spec, config.workers):
            for offset, outcome in enumerate(encoded.outcomes):
                summary.add(first_row + offset, outcome)
            for sample in encoded.samples():
                writer.add(sample)
            if summary.read >= next_log:
                _log_progress(summary.read, source.num_rows, summary.written, start)
                next_log = (summary.read // config.log_interval + 1) * config.log_interval
        summary.seconds = time.perf_counter() - start
        if summary.written == 0:
            raise ValueError(
                f"input={str(config.input)!r}: no row was written, nothing to save.\n"
                f"{summary.format(config.seq_length)}\nCheck map_keys / handler_name / seq_length "
                f"against the file's columns: {source.columns}"
            )
        kept = [INPUT_IDS_KEY, ATTENTION_MASK_KEY, *additional]
        kept += [text_key(key) for key in additional if summary.verbatim.get(key)]
        summary.files = writer.commit(kept)
    logger.info("preprocessing summary:\n%s", summary.format(config.seq_length))
    return summary


def _encode_chunks(
    source: RowSource, encoder: RowEncoder, spec: EncoderSpec, workers: int
) -> Iterator[tuple[int, EncodedChunk]]:
    """``(first row index, encoded chunk)`` per chunk, in file order."""
    chunks = source.iter_chunks(CHUNK_ROWS, columns=sorted(set(encoder.handler.required_columns())))
    if workers == 1:
        with single_threaded_tokenizer():
            for first_row, chunk in chunks:
                yield first_row, encoder.encode_chunk(chunk)
        return
    # fork: workers inherit the imported modules (transformers) instead of re-importing them.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers, initializer=init_worker, initargs=(spec,)) as pool:
        yield from _ordered_window(pool, chunks, window=2 * workers)


@contextlib.contextmanager
def single_threaded_tokenizer() -> Iterator[None]:
    """Keep the Rust tokenizer to one thread while inside (``TOKENIZERS_PARALLELISM=false``).

    ``workers`` is the number of cores tokenizing; without this, ``workers: 1`` would batch-encode
    on every core of the machine. The variable is read by the tokenizer at each call; its previous
    value is restored on exit.
    """
    previous = os.environ.get(TOKENIZERS_PARALLELISM)
    os.environ[TOKENIZERS_PARALLELISM] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TOKENIZERS_PARALLELISM, None)
        else:
            os.environ[TOKENIZERS_PARALLELISM] = previous


def _ordered_window(
    pool: multiprocessing.pool.Pool, chunks: Iterable[tuple[int, RowChunk]], window: int
) -> Iterator[tuple[int, EncodedChunk]]:
    """Like ``pool.imap`` but with at most ``window`` chunks read ahead (bounded memory)."""
    pending: deque[tuple[int, multiprocessing.pool.AsyncResult]] = deque()
    for first_row, chunk in chunks:
        pending.append((first_row, pool.apply_async(encode_in_worker, (chunk,))))
        if len(pending) >= window:
            first, result = pending.popleft()
            yield first, result.get()
    while pending:
        first, result = pending.popleft()
        yield first, result.get()


def _log_progress(done: int, total: int, written: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    logger.info(
        "processed %d/%d rows (%.1f%%), written %d, %.0f rows/s, ETA %.0f s",
        done,
        total,
        100.0 * done / max(total, 1),
        written,
        rate,
        eta,
    )


def _remember(rows: list[int], row_index: int) -> None:
    if len(rows) < FIRST_ROWS_SHOWN:
        rows.append(row_index)


def _first_rows(rows: list[int], count: int) -> str:
    if not rows:
        return ""
    more = ", ..." if count > len(rows) else ""
    return f" (rows {', '.join(map(str, rows))}{more})"
