"""Reading dataset files (parquet, json, jsonl) into rows, through pyarrow.

Rows come out as plain Python dicts (nested structs as dicts, lists as lists), in file order, in
chunks, numbered from 0: the "row index" the preprocessing summary reports. A chunk is either a
list of rows or an Arrow record batch, which pickles compactly to a worker process and becomes
rows there (:func:`materialize`).

- ``.parquet``: ``pyarrow.parquet``, streamed batch by batch (the file is never fully in memory).
- ``.jsonl`` (and ``.json`` that is not a JSON array): ``pyarrow.json``, one object per line;
  blank lines are skipped and not numbered. pyarrow needs one type per column across the file;
  when a file breaks that (say ``"answer": 42`` in one row and strings elsewhere) or has an
  unparsable line, the file is read again line by line with the standard ``json`` module, so the
  bad rows can be counted and rejected (``invalid_json``, ``non_string_ground_truth``...) instead
  of failing the whole file. The same happens when pyarrow infers a date/time column from
  ISO-8601-looking strings (an answer "2020-01-01" must stay a string).
- ``.json`` holding a JSON array (alpaca datasets): the standard ``json`` module (pyarrow reads
  only line-delimited JSON); elements that are not objects are rejected as ``invalid_json``.

JSON files must be UTF-8 (a BOM is allowed): they are checked before reading, since pyarrow reads
other bytes without complaint and the strings fail later, far from any line number.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mindspeed_rl.data.handlers import Rejection

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".parquet", ".json", ".jsonl")

# A row is a dict, or a Rejection when the reader itself could not make a dict of it.
Row = dict[str, Any] | Rejection
# What iter_chunks yields: rows, or an Arrow record batch (pickled compactly to worker
# processes, turned into rows there by `materialize`).
RowChunk = list[Row] | Any


def materialize(chunk: RowChunk) -> list[Row]:
    """The rows of a chunk from :meth:`RowSource.iter_chunks`."""
    return chunk if isinstance(chunk, list) else chunk.to_pylist()


@dataclass
class RowSource:
    """An opened input file: its size and column names are known before any row is processed."""

    path: Path
    format: str
    num_rows: int
    columns: list[str]
    _parquet: Any = field(default=None, repr=False)
    _rows: list[Row] | None = field(default=None, repr=False)
    _table: Any = field(default=None, repr=False)

    def iter_chunks(
        self, chunk_size: int, columns: Sequence[str] | None = None
    ) -> Iterator[tuple[int, RowChunk]]:
        """Yield ``(index of the first row, chunk)`` with at most ``chunk_size`` rows per chunk.

        ``columns``: read only these (all must be in ``self.columns``); converting unused nested
        columns to Python objects is most of the reading cost. Rows parsed by the ``json`` module
        keep all their keys. Chunk boundaries may vary (parquet row groups): results must not
        depend on them.
        """
        if self._rows is not None:
            for start in range(0, len(self._rows), chunk_size):
                yield start, self._rows[start : start + chunk_size]
            return
        if self._parquet is not None:
            batches = self._parquet.iter_batches(batch_size=chunk_size, columns=columns)
        else:
            table = self._table if columns is None else self._table.select(list(columns))
            batches = table.to_batches(max_chunksize=chunk_size)
        start = 0
        for batch in batches:
            if batch.num_rows:
                yield start, batch
                start += batch.num_rows


def open_rows(path: str | Path, key: str = "input") -> RowSource:
    """Open ``path`` for reading; ``ValueError`` naming ``key`` if it is missing or unsupported."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" ({path.resolve()})"
        raise ValueError(
            f"{key}={str(path)!r}{where} does not exist or is not a file; it should be the "
            f"downloaded dataset file ({', '.join(SUPPORTED_SUFFIXES)})"
        )
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{key}={str(path)!r}: unsupported file type {suffix!r}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    if suffix == ".parquet":
        return _open_parquet(path, key)
    _check_utf8(path, key)
    if suffix == ".json" and _starts_with_array(path):
        return _open_json_array(path, key)
    return _open_json_lines(path)


def _check_utf8(path: Path, key: str, chunk_bytes: int = 1 << 24) -> None:
    """ValueError naming the first line that is not UTF-8; a fast chunked pass when all is well."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(chunk_bytes):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
        return
    except UnicodeDecodeError:
        pass  # find the line: only on the error path
    with path.open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{key}={str(path)!r}: line {number} is not UTF-8 (byte "
                    f"0x{line[exc.start]:02x} at byte {exc.start + 1} of the line); the file must "
                    "be UTF-8: convert it, e.g. iconv -f latin1 -t utf-8 IN > OUT"
                ) from None
    # not reached: a newline byte never occurs inside a UTF-8 sequence, so some line failed
    raise ValueError(f"{key}={str(path)!r}: the file must be UTF-8")


def _open_parquet(path: Path, key: str) -> RowSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{key}={str(path)!r} is not a readable parquet file: {exc}") from exc
    return RowSource(
        path=path,
        format="parquet",
        num_rows=parquet.metadata.num_rows,
        columns=list(parquet.schema_arrow.names),
        _parquet=parquet,
    )


def _open_json_lines(path: Path) -> RowSource:
    import pyarrow as pa
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(path)
    except pa.ArrowInvalid as exc:
        logger.warning(
            "%s: pyarrow cannot read it as one table (%s); reading it line by line so bad rows "
            "are counted instead",
            path,
            str(exc).splitlines()[0],
        )
        return _rows_source(path, "jsonl", _parse_json_lines(path))
    if any(_is_temporal(f.type) for f in table.schema):
        # pyarrow turns ISO-8601-looking strings ("2020-01-01") into timestamps: a string answer
        # would come out as a datetime. The json module keeps strings as strings.
        logger.info("%s: pyarrow inferred date/time columns; reading it line by line", path)
        return _rows_source(path, "jsonl", _parse_json_lines(path))
    return RowSource(
        path=path, format="jsonl", num_rows=table.num_rows, columns=table.column_names, _table=table
    )


def _open_json_array(path: Path, key: str) -> RowSource:
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}={str(path)!r} is not valid JSON: {exc}") from exc
    rows: list[Row] = [
        item if isinstance(item, dict) else Rejection("invalid_json", type(item).__name__)
        for item in items
    ]
    return _rows_source(path, "json", rows)


def _parse_json_lines(path: Path) -> list[Row]:
    rows: list[Row] = []
    with path.open("rb") as stream:
        for line in stream:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                rows.append(Rejection("invalid_json", str(exc)))
                continue
            rows.append(
                value if isinstance(value, dict) else Rejection("invalid_json", "not an object")
            )
    return rows


def _rows_source(path: Path, fmt: str, rows: list[Row]) -> RowSource:
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return RowSource(path=path, format=fmt, num_rows=len(rows), columns=list(columns), _rows=rows)


def _is_temporal(arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_temporal(arrow_type):
        return True
    if pa.types.is_struct(arrow_type):
        return any(_is_temporal(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _is_temporal(arrow_type.value_type)
    return False


def _starts_with_array(path: Path) -> bool:
    with path.open("rb") as stream:
        while chunk := stream.read(4096):
            stripped = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()  # UTF-8 BOM
            if stripped:
                return stripped.startswith(b"[")
    return False
