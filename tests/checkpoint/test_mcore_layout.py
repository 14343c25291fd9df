"""Megatron's legacy checkpoint layout: names, tracker, layout detection, foreign files."""

import argparse

import pytest
import torch

from mindspeed_rl.checkpoint import mcore_layout as ml
from mindspeed_rl.checkpoint.atomic_dir import atomic_directory


@pytest.mark.parametrize(
    "position,layout,expected",
    [
        ((3, 0, 0), ml.ShardLayout(8, 1, 1), "mp_rank_03"),
        ((1, 1, 0), ml.ShardLayout(2, 2, 1), "mp_rank_01_001"),
        ((0, 0, 1), ml.ShardLayout(1, 1, 2), "mp_rank_00_001"),
        ((2, 1, 3), ml.ShardLayout(4, 2, 4), "mp_rank_02_001_003"),
    ],
)
def test_shard_directory_names_follow_megatron(position, layout, expected):
    assert ml.shard_dir_name(*position, layout) == expected


def test_tracker_and_iteration_directories(tmp_path):
    assert ml.iteration_dir_name(50) == "iter_0000050"
    ml.write_tracker(tmp_path, ml.RELEASE)
    (tmp_path / "release").mkdir()
    assert ml.read_tracker(tmp_path) == "release"
    ml.write_tracker(tmp_path, 120)
    assert ml.read_tracker(tmp_path) == 120
    (tmp_path / ml.TRACKER_FILE).write_text("latest\n")
    with pytest.raises(ValueError, match="expected 'release' or an iteration number"):
        ml.read_tracker(tmp_path)
    with pytest.raises(ValueError, match="checkpoint directory not found"):
        ml.read_tracker(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="tracker file"):
        ml.read_tracker(tmp_path / "release")


def _write(root, layout, layers_per_shard, payload_extra):
    for tp, pp, ep in layout.positions():
        state = {
            f"decoder.layers.{i}.input_layernorm.weight": torch.ones(2)
            for i in range(layers_per_shard)
        }
        path = ml.shard_path(root, ml.RELEASE, tp, pp, ep, layout)
        path.parent.mkdir(parents=True)
        torch.save({"model": state, "checkpoint_version": 3.0, **payload_extra}, path)
    ml.write_tracker(root, ml.RELEASE)


def test_megatron_lm_files_with_args_namespace_load(tmp_path):
    args = argparse.Namespace(
        tensor_model_parallel_size=2, pipeline_model_parallel_size=1,
        expert_model_parallel_size=2, params_dtype=torch.bfloat16,
    )  # fmt: skip
    _write(tmp_path, ml.ShardLayout(2, 1, 2), 4, {"args": args})
    files = ml.find_checkpoint(tmp_path)
    assert files.layout == ml.ShardLayout(2, 1, 2)
    assert files.path(1, 0, 1).parent.name == "mp_rank_01_001"
    assert ml.load_shard(files.path(1, 0, 1))["args"].tensor_model_parallel_size == 2


@pytest.mark.parametrize(
    "layout,layers", [(ml.ShardLayout(1, 2, 1), 2), (ml.ShardLayout(1, 1, 2), 4)]
)
def test_two_part_names_without_a_record_are_told_apart_by_layer_count(tmp_path, layout, layers):
    _write(tmp_path, layout, layers, {})  # mp_rank_00_000, mp_rank_00_001 in both cases
    assert ml.find_checkpoint(tmp_path, num_layers=4).layout == layout


def test_a_missing_shard_is_named(tmp_path):
    _write(tmp_path, ml.ShardLayout(2, 2, 1), 2, {"parallel_layout": {"tp": 2, "pp": 2, "ep": 1}})
    victim = ml.shard_path(tmp_path, ml.RELEASE, 1, 1, 0, ml.ShardLayout(2, 2, 1))
    victim.unlink()
    with pytest.raises(ValueError, match="1 shard\\(s\\) are missing, e.g. .*mp_rank_01_001"):
        ml.find_checkpoint(tmp_path)


def test_a_truncated_shard_is_a_clear_error(tmp_path):
    _write(tmp_path, ml.ShardLayout(1, 1, 1), 1, {})
    path = ml.shard_path(tmp_path, ml.RELEASE, 0, 0, 0, ml.ShardLayout())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read as a Megatron checkpoint shard"):
        ml.load_shard(path)


def test_atomic_directory_leaves_nothing_on_error_and_replaces_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError, match="not empty; pass --force"):
        with atomic_directory(target):
            pass
    with atomic_directory(target, force=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["b"]
