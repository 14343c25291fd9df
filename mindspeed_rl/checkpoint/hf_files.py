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
import shutil
from pathlib import Path

import torch

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


def compact(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` if it owns exactly its storage, else a contiguous copy.

    ``torch.save`` writes a view's whole underlying storage and ``safetensors`` refuses tensors
    that share memory, so every tensor is made compact before it is written.
    """
    storage_bytes = tensor.untyped_storage().nbytes()
    own = tensor.numel() * tensor.element_size()
    if tensor.is_contiguous() and tensor.storage_offset() == 0 and storage_bytes == own:
        return tensor
    return tensor.contiguous().clone()


_MADV_POPULATE_READ = 22  # Linux >= 5.14: fault a range in with one call instead of per page
_can_populate = True


def _populate(mapped: mmap.mmap, offset: int, length: int) -> None:
    """Map the pages of ``[offset, offset + length)`` in one go (a speed-up only)."""
    global _can_populate
    if not _can_populate or length <= 0:
        return
    start = offset - offset % mmap.PAGESIZE
    try:
        mapped.madvise(_MADV_POPULATE_READ, start, min(len(mapped), offset + length) - start)
    except (OSError, ValueError, AttributeError):
        _can_populate = False


class _SafetensorsFile:
    """One safetensors file: its header, parsed and checked, and a lazily opened memory map.

    Format: 8-byte little-endian header length ``N``, ``N`` bytes of JSON
    (``name -> {dtype, shape, data_offsets: [begin, end]}``, offsets relative to the data
    section), then the data. The data section must be covered exactly, which is how a
    truncated file is caught before anything is converted.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
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
        dtype, shape, begin = self.entries[name]
        row_numel = torch.Size(shape[1:]).numel()
        first, last = (0, shape[0]) if rows is None else rows.indices(shape[0])[:2]
        if not shape:
            first, last = 0, 1
        offset = self.data_start + begin + first * row_numel * dtype.itemsize
        count = (last - first) * row_numel
        _populate(self._map, offset, count * dtype.itemsize)
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

    Tensors (or the contiguous row range a TP rank needs) are returned as zero-copy views on a
    memory map of the file, so ``torch.save`` writes them straight from the page cache; only
    column slices and fused tensors are copied. :meth:`release` unmaps the files (call it once
    the tensors read so far are written), which keeps resident memory near one output shard.

    Raises ValueError naming the file for a missing index / shard, a truncated or corrupt
    safetensors file, or a directory holding only ``pytorch_model*.bin`` weights.
    """

    def __init__(self, hf_dir: str | Path) -> None:
        self.dir = Path(hf_dir)
        self._file_of: dict[str, _SafetensorsFile] = {}
        for path in self._weight_files():
            parsed = _SafetensorsFile(path)
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
        if cols is not None:
            tensor = tensor[:, cols].contiguous()
        return tensor

    def release(self) -> None:
        """Unmap every file (tensors still referenced keep their pages until freed)."""
        for parsed in set(self._file_of.values()):
            parsed.close()


class ShardedSafetensorsWriter:
    """Stream tensors into ``model-XXXXX-of-YYYYY.safetensors`` shards of <= ``max_shard_bytes``.

    The caller announces every tensor up front (name, shape, dtype, in the order it will add
    them), so each shard's header is known before its first tensor arrives and every tensor is
    written the moment it is produced: nothing is accumulated, memory stays at one tensor. The
    files are the safetensors format (8-byte header length, JSON header padded to 8 bytes, raw
    little-endian data) written with plain ``write`` calls, which is several times faster than
    ``safetensors.torch.save_file`` here; the index is written last.
    """

    def __init__(
        self,
        out_dir: Path,
        entries: list[tuple[str, tuple[int, ...], torch.dtype]],
        max_shard_bytes: int,
    ) -> None:
        self.out_dir = out_dir
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
        self._handle = None
        self._shard = -1
        self.total_bytes = 0

    def _open(self, shard: int) -> None:
        if self._handle is not None:
            self._handle.close()
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
        self._handle = open(self.files[shard], "wb")
        self._handle.write(len(raw).to_bytes(8, "little") + raw)
        self._shard = shard

    def add(self, name: str, tensor: torch.Tensor) -> None:
        assert self._next < len(self._order), f"{name}: more tensors than announced"
        shard, (expected, shape, dtype) = self._order[self._next]
        assert (name, tuple(tensor.shape), tensor.dtype) == (expected, shape, dtype), (
            f"got {name} {list(tensor.shape)} {tensor.dtype}, announced {expected} {list(shape)} "
            f"{dtype}"
        )
        if shard != self._shard:
            self._open(shard)
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        self._handle.write(memoryview(data.numpy()))
        self.total_bytes += data.numel()
        self._next += 1

    def finish(self) -> list[Path]:
        """Close the last shard and write ``model.safetensors.index.json``."""
        assert self._next == len(self._order), (
            f"{len(self._order) - self._next} announced tensor(s) were never written"
        )
        if self._handle is not None:
            self._handle.close()
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
