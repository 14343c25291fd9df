"""Hugging Face checkpoint files: lazy safetensors reading and sharded safetensors writing.

Reading parses each file's header once (checking that it covers the file exactly: a truncated
file is an error before anything is written) and serves tensors, or the rows / columns one TP
rank needs, from a memory map; :meth:`SafetensorsSource.release` unmaps the files so that the
pages of weights already converted stop counting against the process. Writing streams each tensor
into ``model-XXXXX-of-YYYYY.safetensors`` shards as it is produced, then writes
``model.safetensors.index.json`` -- the layout ``save_pretrained`` writes and every loader
(transformers 4.x / 5.x, vLLM) reads.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from pathlib import Path

import torch

from mindspeed_rl.checkpoint.file_blocks import BlockWriter, MappedFiles, pwrite_all
from mindspeed_rl.models.tensor_layouts import Block, blocks_nbytes, blocks_shape

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Files of a model directory that are not weights; copied along with converted weights.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
GENERATION_CONFIG = "generation_config.json"

_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class _SafetensorsFile:
    """One safetensors file: its header, parsed and checked, and a lazily opened memory map.

    Format: 8-byte little-endian header length ``N``, ``N`` bytes of JSON
    (``name -> {dtype, shape, data_offsets: [begin, end]}``, offsets relative to the data
    section), then the data. The data section must be covered exactly, which is how a
    truncated file is caught before anything is converted.
    """

    def __init__(self, path: Path, regions: MappedFiles) -> None:
        self.path = path
        self._regions = regions
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: not a safetensors file (shorter than its header size)")
            length = int.from_bytes(head, "little")
            if length > size - 8:
                raise ValueError(f"{path}: truncated or not a safetensors file (header length)")
            try:
                header = json.loads(f.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: not a safetensors file ({err})") from err
        header.pop("__metadata__", None)
        self.data_start = 8 + length
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        end = 0
        for name, entry in header.items():
            if entry.get("dtype") not in _DTYPES:
                raise ValueError(f"{path}: {name} has unsupported dtype {entry.get('dtype')}")
            dtype, shape = _DTYPES[entry["dtype"]], tuple(entry["shape"])
            begin, stop = entry["data_offsets"]
            if stop - begin != torch.Size(shape).numel() * dtype.itemsize:
                raise ValueError(f"{path}: {name}: data size does not match its shape {shape}")
            self.entries[name] = (dtype, shape, begin)
            end = max(end, stop)
        if self.data_start + end != size:
            raise ValueError(
                f"{path}: truncated or corrupt: the header describes {self.data_start + end} "
                f"bytes, the file has {size}"
            )
        self._map: mmap.mmap | None = None

    def tensor(self, name: str, rows: slice | None) -> torch.Tensor:
        """A zero-copy view of ``name`` (or of a contiguous range of its rows) on the map."""
        if self._map is None:
            with open(self.path, "rb") as f:
                # private (copy-on-write) mapping: writable for torch.frombuffer, shares the
                # page cache until written, which never happens
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            start = torch.frombuffer(self._map, dtype=torch.uint8, count=1).data_ptr()
            self._regions.add(start, len(self._map), self.path, self._map)
        dtype, shape, begin = self.entries[name]
        row_numel = torch.Size(shape[1:]).numel()
        first, last = (0, shape[0]) if rows is None else rows.indices(shape[0])[:2]
        if not shape:
            first, last = 0, 1
        offset = self.data_start + begin + first * row_numel * dtype.itemsize
        count = (last - first) * row_numel
        flat = torch.frombuffer(self._map, dtype=dtype, count=count, offset=offset)
        return flat.view((last - first, *shape[1:]) if shape else ())

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a tensor still views the map; it is unmapped when freed
                pass
            self._map = None


class SafetensorsSource:
    """A ``param_mapping.TensorSource`` over a Hugging Face model directory.

    Tensors (or the rows / columns a TP rank needs) are returned as zero-copy views on a
    memory map of the file, registered in :attr:`regions` so that a ``file_blocks.BlockWriter``
    copies their bytes file to file. :meth:`release` unmaps the files (call it once the tensors
    read so far are written), which keeps resident memory near one output shard.

    Raises ValueError naming the file for a missing index / shard, a truncated or corrupt
    safetensors file, or a directory holding only ``pytorch_model*.bin`` weights.
    """

    def __init__(self, hf_dir: str | Path) -> None:
        self.dir = Path(hf_dir)
        self.regions = MappedFiles()
        self._file_of: dict[str, _SafetensorsFile] = {}
        for path in self._weight_files():
            parsed = _SafetensorsFile(path, self.regions)
            for name in parsed.entries:
                if name in self._file_of:
                    raise ValueError(f"{path}: {name} is also in {self._file_of[name].path}")
                self._file_of[name] = parsed
        index = self.dir / INDEX_FILE
        if index.is_file():
            listed = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            absent = sorted(set(listed) - set(self._file_of))
            if absent:
                raise ValueError(
                    f"{index}: lists {len(absent)} tensor(s) not found in the shards, e.g. "
                    f"{absent[0]!r} in {listed[absent[0]]}"
                )

    def _weight_files(self) -> list[Path]:
        if not self.dir.is_dir():
            raise ValueError(f"{self.dir}: Hugging Face model directory not found")
        index = self.dir / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{index}: not a safetensors index ({err})") from err
            files = sorted({self.dir / f for f in weight_map.values()})
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise ValueError(f"{index}: names shard file(s) that do not exist: {missing}")
            return files
        if (self.dir / SINGLE_FILE).is_file():
            return [self.dir / SINGLE_FILE]
        if any(self.dir.glob("pytorch_model*.bin")):
            raise ValueError(
                f"{self.dir}: only pytorch_model*.bin weights; convert them to safetensors first "
                "(transformers: model.save_pretrained(dir, safe_serialization=True))"
            )
        raise ValueError(f"{self.dir}: no {INDEX_FILE} or {SINGLE_FILE}")

    def names(self) -> list[str]:
        return list(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file_of[name].entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._file_of[name].entries[name][0]

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        tensor = self._file_of[name].tensor(name, rows)
        return tensor if cols is None else tensor[:, cols]

    def release(self) -> None:
        """Unmap every file (tensors still referenced keep their pages until freed)."""
        self.regions.clear()
        for parsed in set(self._file_of.values()):
            parsed.close()


class ShardedSafetensorsWriter:
    """Stream tensors into ``model-XXXXX-of-YYYYY.safetensors`` shards of <= ``max_shard_bytes``.

    The caller announces every tensor up front (name, shape, dtype, in the order it will add
    them), so each shard's header is known before its first tensor arrives and every tensor is
    written the moment it is produced: nothing is accumulated. A tensor may be given as row
    blocks (``WeightMapping.merge_blocks``), which ``block_writer`` writes without assembling
    them, copying file to file what lies in a mapped input. The files are the safetensors format
    (8-byte header length, JSON header padded to 8 bytes, raw little-endian data); the index is
    written last.
    """

    def __init__(
        self,
        out_dir: Path,
        entries: list[tuple[str, tuple[int, ...], torch.dtype]],
        max_shard_bytes: int,
        block_writer: BlockWriter | None = None,
    ) -> None:
        self.out_dir = out_dir
        self._writer = block_writer or BlockWriter()
        self._shards: list[list[tuple[str, tuple[int, ...], torch.dtype]]] = [[]]
        size = 0
        for name, shape, dtype in entries:
            nbytes = torch.Size(shape).numel() * dtype.itemsize
            if self._shards[-1] and size + nbytes > max_shard_bytes:
                self._shards.append([])
                size = 0
            self._shards[-1].append((name, tuple(shape), dtype))
            size += nbytes
        count = len(self._shards)
        self.files = [
            out_dir / f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)
        ]
        self._order = [(i, e) for i, shard in enumerate(self._shards) for e in shard]
        self._next = 0
        self._fd: int | None = None
        self._offset = 0
        self._shard = -1
        self.total_bytes = 0

    def close(self) -> None:
        """Close the shard being written (done by :meth:`finish`; call it on an error)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self, shard: int) -> None:
        self.close()
        header, offset = {}, 0
        for name, shape, dtype in self._shards[shard]:
            nbytes = torch.Size(shape).numel() * dtype.itemsize
            header[name] = {
                "dtype": _DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._fd = os.open(self.files[shard], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        pwrite_all(self._fd, len(raw).to_bytes(8, "little") + raw, 0)
        self._offset = 8 + len(raw)
        self._shard = shard

    def add(self, name: str, tensor: torch.Tensor | list[Block]) -> None:
        blocks = [tensor.detach()] if isinstance(tensor, torch.Tensor) else tensor
        assert self._next < len(self._order), f"{name}: more tensors than announced"
        shard, (expected, shape, dtype) = self._order[self._next]
        got = (name, blocks_shape(blocks, name), blocks[0].dtype)
        assert got == (expected, shape, dtype), f"got {got}, announced {expected} {shape} {dtype}"
        if shard != self._shard:
            self._open(shard)
        self._offset = self._writer.write(self._fd, self._offset, blocks)
        self.total_bytes += blocks_nbytes(blocks)
        self._next += 1

    def finish(self) -> list[Path]:
        """Close the last shard and write ``model.safetensors.index.json``."""
        assert self._next == len(self._order), (
            f"{len(self._order) - self._next} announced tensor(s) were never written"
        )
        self.close()
        weight_map = {
            name: self.files[i].name for i, shard in enumerate(self._shards) for name, _, _ in shard
        }
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return self.files


def copy_model_files(source: Path, out_dir: Path, names: tuple[str, ...]) -> list[str]:
    """Copy those of ``names`` that exist in ``source`` (a directory, or a single file)."""
    copied = []
    if source.is_file():
        shutil.copy2(source, out_dir / source.name)
        return [source.name]
    for name in names:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
            copied.append(name)
    return copied
