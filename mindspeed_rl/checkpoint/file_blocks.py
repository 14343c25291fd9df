"""Tensors into files at byte offsets, copying in the kernel what already lies in a file.

Most bytes of a converted checkpoint are input bytes moved elsewhere: a TP rank's rows of q / k /
v, gate / up or the vocabulary are contiguous ranges of an input tensor, and
``WeightMapping.shard_blocks`` / ``merge_blocks`` hand them over as views. When such a view lies
on a memory map of an input file registered in :class:`MappedFiles`, :class:`BlockWriter`
copies its bytes file to file with ``os.copy_file_range``: no page is faulted into the process
and no byte crosses user space, as with ``cp``. Everything else (column slices, joined
row-parallel weights, transposed grouped-expert views) is computed a bounded number of rows at
a time into one reusable buffer and written with ``pwrite``, so memory stays at that buffer
whatever the tensor. (hf -> mg packs grouped experts whole: one parameter at a time.)

Where the kernel cannot copy (another filesystem on some kernels, no ``copy_file_range``), the
same bytes are written from the mapped memory instead: slower, never different.
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import functools
import logging
import os
import struct
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from mindspeed_rl.models.tensor_layouts import Block, ColumnConcat, blocks_nbytes

logger = logging.getLogger(__name__)

# copy_file_range errors that mean "not between these files": fall back to writing from memory
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
_BUFFER_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class _Region:
    start: int  # address of the mapped file's byte 0
    stop: int
    path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the file that was mapped
    keepalive: object  # keeps the mapping (so the address range) alive while registered


class MappedFiles:
    """Memory-mapped input files by address, so that a tensor viewing one can be found on disk.

    Each region holds a reference that keeps its mapping alive, so its address range cannot be
    reused by another mapping while it is registered; :meth:`clear` drops them. No descriptor
    is held (a stage of a large MoE checkpoint maps TP x EP files): the writer opens the file
    for each copy and checks that it is still the file that was mapped. A region must be
    registered only while nothing writes to the mapping (the converters map inputs
    copy-on-write and never modify them).
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._regions: list[_Region] = []

    def add(self, start: int, nbytes: int, path: Path, keepalive: object) -> None:
        """Register ``nbytes`` mapped at address ``start`` from byte 0 of ``path`` (just mapped)."""
        stat = os.stat(path)
        region = _Region(start, start + nbytes, Path(path), (stat.st_dev, stat.st_ino), keepalive)
        index = bisect.bisect(self._starts, start)
        self._starts.insert(index, start)
        self._regions.insert(index, region)

    def locate(self, tensor: torch.Tensor) -> tuple[_Region, int] | None:
        """``(region, file offset)`` of a contiguous tensor's bytes, or None if on no region."""
        if not tensor.is_contiguous():
            return None
        ptr, nbytes = tensor.data_ptr(), tensor.numel() * tensor.element_size()
        index = bisect.bisect(self._starts, ptr) - 1
        if index < 0 or ptr + nbytes > self._regions[index].stop:
            return None
        region = self._regions[index]
        return region, ptr - region.start

    def clear(self) -> None:
        self._starts.clear()
        self._regions.clear()

    def __len__(self) -> int:
        return len(self._regions)


def _tensors(obj: object) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


@functools.lru_cache(maxsize=256)
def _storage_records(path: str, identity: tuple) -> tuple[tuple[tuple[int, int], ...], str]:
    """Sorted (file offset, size) of the non-empty storage records (``<archive>/data/<key>``)
    of a ``torch.save`` zip file, and its ``byteorder`` record ('' when absent). ``identity``
    (device, inode, size, mtime) keys the cache."""
    extents, byteorder = [], ""
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            record = info.filename.partition("/")[2]
            if info.file_size == 0 or not (record.startswith("data/") or record == "byteorder"):
                continue
            f.seek(info.header_offset)
            header = f.read(30)  # local file header: name and extra-field lengths at 26..29
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            offset = info.header_offset + 30 + name_len + extra_len
            if record == "byteorder":  # read raw: torch may have written no CRC to check
                f.seek(offset)
                byteorder = f.read(info.file_size).decode("ascii", "replace")
            else:
                extents.append((offset, info.file_size))
    return tuple(sorted(extents)), byteorder


def torch_file_base(path: Path, payload: object) -> int | None:
    """The address of byte 0 of ``path`` in the mapping ``torch.load(path, mmap=True)`` made
    for ``payload``; None when it cannot be established.

    That load maps the whole file and slices one storage per record, so storage addresses are
    the records' file offsets plus one base. It is established only when the payload's storages
    are exactly the file's storage records (as many, the same sizes, in the same order), so the
    answer is either right or None. A file of the other byte order is never placed: torch swaps
    its mapped bytes in memory, so they are no longer the file's.
    """
    storages: dict[int, int] = {}
    for tensor in _tensors(payload):
        storage = tensor.untyped_storage()
        if storage.nbytes():
            storages[storage.data_ptr()] = storage.nbytes()
    stat = os.stat(path)
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    try:
        records, byteorder = _storage_records(str(path), identity)
    except (zipfile.BadZipFile, OSError, struct.error):
        return None
    if byteorder not in ("", sys.byteorder):
        return None
    if not storages or len(records) != len(storages):
        return None
    ptrs = sorted(storages)
    base = ptrs[0] - records[0][0]
    for ptr, (offset, size) in zip(ptrs, records, strict=True):
        if ptr - base != offset or storages[ptr] != size:
            return None
    return base


def register_torch_file(regions: MappedFiles, path: Path, payload: object) -> bool:
    """Register the mapping of a ``torch.load(mmap=True)`` payload; False if not possible."""
    base = torch_file_base(path, payload)
    if base is None:
        logger.debug("%s: records not placed; its tensors are written from memory", path)
        return False
    keepalive = next(t.untyped_storage() for t in _tensors(payload) if t.untyped_storage().nbytes())
    regions.add(base, os.path.getsize(path), path, keepalive)
    return True


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``os.pwrite`` until everything is written (it may write less than asked)."""
    data = memoryview(data)
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


class BlockWriter:
    """Write lists of row blocks (``tensor_layouts.Block``) into files at given offsets.

    ``kernel_bytes`` / ``user_bytes`` count what went file to file and what went through the
    process (the converter CLI prints the share).
    """

    def __init__(self, regions: MappedFiles | None = None, buffer_bytes: int = _BUFFER_BYTES):
        self.regions = regions
        self._buffer_bytes = buffer_bytes
        self._buffer: torch.Tensor | None = None
        self._kernel_copy = hasattr(os, "copy_file_range")
        self.kernel_bytes = 0
        self.user_bytes = 0

    def write(self, fd: int, offset: int, blocks: Sequence[Block]) -> int:
        """Write ``blocks`` back to back from ``offset``; returns the offset after them."""
        for block in blocks:
            nbytes = blocks_nbytes([block])
            if isinstance(block, torch.Tensor) and block.is_contiguous():
                if not self._copy_in_kernel(block, fd, offset, nbytes):
                    pwrite_all(fd, _bytes_of(block), offset)
                    self.user_bytes += nbytes
            else:
                self._write_computed(block, fd, offset)
                self.user_bytes += nbytes
            offset += nbytes
        return offset

    def _copy_in_kernel(self, block: torch.Tensor, fd: int, offset: int, nbytes: int) -> bool:
        where = self.regions.locate(block) if self.regions and self._kernel_copy else None
        if where is None or nbytes == 0:
            return False
        region, src_offset = where
        try:
            src = os.open(region.path, os.O_RDONLY)
        except FileNotFoundError:
            src = None
        try:
            stat = os.fstat(src) if src is not None else None
            if stat is None or (stat.st_dev, stat.st_ino) != region.identity:
                # replaced or removed since it was mapped: the mapping still holds its bytes
                logger.warning(
                    "%s changed on disk during conversion; copying from memory", region.path
                )
                return False
            done = 0
            while done < nbytes:
                copied = os.copy_file_range(
                    src, fd, nbytes - done, src_offset + done, offset + done
                )
                if copied == 0:  # the file is shorter than its mapping said
                    raise OSError(errno.EIO, f"{region.path}: copy_file_range copied nothing")
                done += copied
        except OSError as err:
            if err.errno not in _NO_KERNEL_COPY:
                raise
            logger.info("copy_file_range unavailable here (%s); writing from memory", err)
            self._kernel_copy = False
            return False
        finally:
            if src is not None:
                os.close(src)
        self.kernel_bytes += nbytes
        return True

    def _write_computed(self, block: Block, fd: int, offset: int) -> None:
        """A non-contiguous view or a :class:`ColumnConcat`, a few rows at a time."""
        shape, dtype = tuple(block.shape), block.dtype
        rows = shape[0]
        row_bytes = torch.Size(shape[1:]).numel() * dtype.itemsize
        step = max(1, self._buffer_bytes // max(1, row_bytes))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            out = self._scratch((stop - start, *shape[1:]), dtype)
            if isinstance(block, ColumnConcat):
                block.rows_into(start, stop, out)
            else:
                out.copy_(block[start:stop])
            pwrite_all(fd, _bytes_of(out), offset)
            offset += out.numel() * dtype.itemsize

    def _scratch(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if nbytes > self._buffer_bytes:  # one row larger than the buffer
            return torch.empty(shape, dtype=dtype)
        if self._buffer is None:
            self._buffer = torch.empty(self._buffer_bytes, dtype=torch.uint8)
        return self._buffer[:nbytes].view(dtype).view(shape)
