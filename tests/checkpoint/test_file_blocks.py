"""Writing row blocks into files: file-to-file copies, computed blocks, fallbacks, torch records."""

import errno
import mmap
import os
from pathlib import Path

import pytest
import torch

from mindspeed_rl.checkpoint import file_blocks, mcore_layout
from mindspeed_rl.checkpoint.file_blocks import BlockWriter, MappedFiles
from mindspeed_rl.models.tensor_layouts import ColumnConcat, concat_blocks

kernel_copy = pytest.mark.skipif(
    not hasattr(os, "copy_file_range"), reason="os.copy_file_range needs Linux (Python >= 3.8)"
)


@pytest.fixture
def mapped(tmp_path):
    """A file of known bytes, mapped copy-on-write and registered; yields (tensor view, regions)."""
    values = torch.arange(64 * 48, dtype=torch.float32).reshape(64, 48)
    path = tmp_path / "input.bin"
    path.write_bytes(values.numpy().tobytes())
    with open(path, "rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tensor = torch.frombuffer(view, dtype=torch.float32).view(64, 48)
    regions = MappedFiles()
    regions.add(tensor.data_ptr(), len(view), path, view)
    yield tensor, regions
    regions.clear()


def _write(writer: BlockWriter, path: Path, blocks) -> bytes:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        end = writer.write(fd, 0, blocks)
    finally:
        os.close(fd)
    assert end == path.stat().st_size
    return path.read_bytes()


@kernel_copy
def test_blocks_on_a_mapped_file_are_copied_by_the_kernel(mapped, tmp_path):
    tensor, regions = mapped
    blocks = [tensor[3:10], torch.full((2, 48), 7.0), tensor[40:64]]
    writer = BlockWriter(regions)
    data = _write(writer, tmp_path / "out.bin", blocks)
    assert data == concat_blocks(blocks).numpy().tobytes()
    assert writer.kernel_bytes == (7 + 24) * 48 * 4
    assert writer.user_bytes == 2 * 48 * 4


def test_strided_and_column_joined_blocks_go_through_a_small_buffer(mapped, tmp_path):
    tensor, regions = mapped
    columns = tensor[:, 16:42]  # not contiguous: a TP rank's columns
    joined = ColumnConcat((tensor[:, :8], tensor[:, 30:48]))
    # a buffer of 5 rows of the widest block: every computed block takes several passes
    writer = BlockWriter(regions, buffer_bytes=5 * 26 * 4)
    data = _write(writer, tmp_path / "out.bin", [columns, joined])
    assert data == concat_blocks([columns.contiguous(), joined.materialize()]).numpy().tobytes()
    assert writer.kernel_bytes == 0 and writer.user_bytes == len(data)


def test_a_kernel_that_cannot_copy_falls_back_to_the_same_bytes(mapped, tmp_path, monkeypatch):
    tensor, regions = mapped

    def cross_device(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device)
    writer = BlockWriter(regions)
    data = _write(writer, tmp_path / "out.bin", [tensor[5:9], tensor[50:51]])
    assert data == torch.cat([tensor[5:9], tensor[50:51]]).numpy().tobytes()
    assert writer.kernel_bytes == 0


def test_other_copy_errors_are_raised(mapped, tmp_path, monkeypatch):
    tensor, regions = mapped

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", no_space)
    with pytest.raises(OSError, match="No space"):
        _write(BlockWriter(regions), tmp_path / "out.bin", [tensor[5:9]])


def test_locate_only_answers_for_contiguous_views_inside_a_region(mapped, tmp_path):
    tensor, regions = mapped
    region, offset = regions.locate(tensor[2:4])
    assert region.path == tmp_path / "input.bin" and offset == 2 * 48 * 4
    assert regions.locate(tensor[:, 1:3]) is None
    assert regions.locate(tensor.clone()) is None
    regions.clear()
    assert regions.locate(tensor[2:4]) is None


@kernel_copy
def test_short_kernel_copies_are_continued(mapped, tmp_path, monkeypatch):
    tensor, regions = mapped
    real = os.copy_file_range

    def at_most_100_bytes(src, dst, count, offset_src, offset_dst):
        return real(src, dst, min(count, 100), offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", at_most_100_bytes)
    writer = BlockWriter(regions)
    data = _write(writer, tmp_path / "out.bin", [tensor[1:30]])
    assert data == tensor[1:30].numpy().tobytes() and writer.kernel_bytes == len(data)


@kernel_copy
def test_an_input_replaced_or_removed_on_disk_is_copied_from_what_was_mapped(mapped, tmp_path):
    tensor, regions = mapped
    expected = tensor[4:8].numpy().tobytes()
    replacement = tmp_path / "other.bin"
    replacement.write_bytes(bytes(len(tensor.numpy().tobytes())))
    os.replace(replacement, tmp_path / "input.bin")  # same path, another file
    writer = BlockWriter(regions)
    assert _write(writer, tmp_path / "out.bin", [tensor[4:8]]) == expected
    os.unlink(tmp_path / "input.bin")  # removed: the mapping still holds the bytes
    assert _write(writer, tmp_path / "out.bin", [tensor[4:8]]) == expected
    assert writer.kernel_bytes == 0


def _payload():
    return {
        "model": {"a": torch.randn(30, 7), "b": torch.arange(5), "c": torch.randn(4).bfloat16()},
        "rng": [torch.randn(3)],
        "note": "x",
    }


def test_torch_file_base_maps_every_storage_to_its_record(tmp_path):
    path = tmp_path / "shard.pt"
    torch.save(_payload(), path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    base = file_blocks.torch_file_base(path, loaded)
    raw = path.read_bytes()
    for tensor in [*loaded["model"].values(), *loaded["rng"]]:
        offset = tensor.data_ptr() - base
        assert raw[offset : offset + tensor.nbytes] == tensor.view(torch.uint8).numpy().tobytes()
    # a payload missing some of the file's storages cannot be placed: no guess, no region
    assert file_blocks.torch_file_base(path, loaded["model"]) is None
    regions = MappedFiles()
    assert not file_blocks.register_torch_file(regions, path, loaded["model"])
    assert len(regions) == 0
    assert file_blocks.register_torch_file(regions, path, loaded) and len(regions) == 1


def _blocks(state):
    return {"a": [state["a"][:10], state["a"][10:]], "b": [state["b"]], "c": [state["c"]]}


def test_save_shard_blocks_writes_what_save_shard_writes(tmp_path):
    state = _payload()["model"]
    layout = mcore_layout.ShardLayout(2, 1, 1)
    extra = {"hf_config": "{}"}
    mcore_layout.save_shard(tmp_path / "plain.pt", state, layout, 7, extra)
    mcore_layout.save_shard_blocks(
        tmp_path / "blocks.pt", _blocks(state), layout, BlockWriter(), 7, extra
    )
    plain = mcore_layout.load_shard(tmp_path / "plain.pt", mmap=False)
    blocks = mcore_layout.load_shard(tmp_path / "blocks.pt", mmap=False)
    assert plain.keys() == blocks.keys()
    for key in plain:
        if key == "model":
            assert plain[key].keys() == blocks[key].keys()
            for name, tensor in plain[key].items():
                assert blocks[key][name].dtype == tensor.dtype
                assert torch.equal(blocks[key][name], tensor), name
        else:
            assert plain[key] == blocks[key], key


def test_save_shard_blocks_without_skip_data_assembles_and_saves(tmp_path, monkeypatch):
    state = _payload()["model"]
    monkeypatch.delattr(torch.serialization, "skip_data")  # torch < 2.6 (Ascend's 2.5.1)
    layout = mcore_layout.ShardLayout()
    mcore_layout.save_shard_blocks(tmp_path / "old.pt", _blocks(state), layout, BlockWriter())
    loaded = mcore_layout.load_shard(tmp_path / "old.pt", mmap=False)["model"]
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.items())


@kernel_copy
def test_save_shard_blocks_copies_mapped_blocks_into_the_records(tmp_path):
    """Blocks on a mapped torch file (what mg -> hf and a re-conversion see) go file to file
    into the new file's records, and the result loads as the assembled tensors."""
    source = tmp_path / "source.pt"
    torch.save(_payload(), source)
    loaded = torch.load(source, mmap=True, weights_only=True)
    regions = MappedFiles()
    assert file_blocks.register_torch_file(regions, source, loaded)
    state = loaded["model"]
    writer = BlockWriter(regions)
    mcore_layout.save_shard_blocks(
        tmp_path / "out.pt", _blocks(state), mcore_layout.ShardLayout(), writer
    )
    out = mcore_layout.load_shard(tmp_path / "out.pt", mmap=False)["model"]
    assert all(torch.equal(out[name], tensor) for name, tensor in state.items())
    assert writer.kernel_bytes == sum(t.nbytes for t in state.values()) and writer.user_bytes == 0
    regions.clear()
