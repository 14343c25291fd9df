"""Bad input: one clear error, exit status 2, and nothing half-written in (or next to) the target."""

import json
import shutil

import pytest

from cli.convert_ckpt import main
from mindspeed_rl.checkpoint import mcore_layout
from tests.checkpoint.test_roundtrip import hf_to_mg, mg_to_hf


@pytest.fixture
def qwen2(tiny_models, tmp_path):
    """A private copy of the tiny Qwen2 model that a test may damage."""
    return shutil.copytree(tiny_models["qwen2"], tmp_path / "qwen2")


def _edit_config(hf_dir, **changes):
    path = hf_dir / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _assert_one_error(capsys, out_dir, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("convert_ckpt: error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}")]
    assert leftovers == [] and not out_dir.exists()


def test_missing_config_json(qwen2, tmp_path, capsys):
    (qwen2 / "config.json").unlink()
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 1, 1)) == 2
    _assert_one_error(capsys, tmp_path / "out", "config.json: not found")


def test_index_naming_a_missing_shard(qwen2, tmp_path, capsys):
    next(qwen2.glob("model-00002-of-*.safetensors")).unlink()
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 1, 1)) == 2
    _assert_one_error(capsys, tmp_path / "out", "names shard file(s) that do not exist")


def test_missing_tensor(qwen2, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    shard = next(qwen2.glob("model-00001-of-*.safetensors"))
    tensors = load_file(shard)
    victim = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != victim}, shard)
    index = qwen2 / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    del data["weight_map"][victim]
    index.write_text(json.dumps(data))
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 1, 1)) == 2
    _assert_one_error(capsys, tmp_path / "out", "missing", victim)


def test_unknown_model_type(qwen2, tmp_path, capsys):
    _edit_config(qwen2, model_type="gemma2")
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 1, 1)) == 2
    _assert_one_error(capsys, tmp_path / "out", "model_type 'gemma2' is not known", "qwen3_moe")


def test_query_groups_not_divisible_by_tp(qwen2, tmp_path, capsys):
    assert hf_to_mg(qwen2, tmp_path / "out", (4, 1, 1)) == 2  # 2 query groups
    _assert_one_error(capsys, tmp_path / "out", "num_query_groups=2", "valid TP sizes: [1, 2]")


def test_uneven_pipeline_stages(qwen2, tmp_path, capsys):
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 3, 1)) == 2  # 2 layers
    _assert_one_error(capsys, tmp_path / "out", "valid PP sizes: [1, 2]")


def test_truncated_safetensors(qwen2, tmp_path, capsys):
    shard = next(qwen2.glob("model-00002-of-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-1000])
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 1, 1)) == 2
    _assert_one_error(capsys, tmp_path / "out", shard.name, "truncated or corrupt")


def test_model_type_hf_flag_must_match_config(qwen2, tmp_path, capsys):
    assert hf_to_mg(qwen2, tmp_path / "out", (1, 1, 1), "--model-type-hf", "qwen3") == 2
    _assert_one_error(capsys, tmp_path / "out", "--model-type-hf names 'qwen3'")


def test_add_qkv_bias_on_a_model_without_it(tiny_models, tmp_path, capsys):
    assert hf_to_mg(tiny_models["qwen3"], tmp_path / "out", (1, 1, 1), "--add-qkv-bias") == 2
    _assert_one_error(capsys, tmp_path / "out", "--add-qkv-bias", "qwen3")


def test_non_empty_target_needs_force(qwen2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert hf_to_mg(qwen2, out, (1, 1, 1)) == 2
    err = capsys.readouterr().err
    assert "directory is not empty; pass --force" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert hf_to_mg(qwen2, out, (1, 1, 1), "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == [mcore_layout.TRACKER_FILE, "release"]


def test_failure_while_writing_leaves_nothing(qwen2, tmp_path, capsys, monkeypatch):
    calls = []
    real_save = mcore_layout.save_shard

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save(*args, **kwargs)

    monkeypatch.setattr(mcore_layout, "save_shard", failing_save)
    assert hf_to_mg(qwen2, tmp_path / "out", (2, 1, 1)) == 2
    _assert_one_error(capsys, tmp_path / "out", "No space left on device")


def test_mg_to_hf_errors(tiny_models, tmp_path, capsys):
    assert mg_to_hf(tmp_path / "nowhere", tmp_path / "out") == 2
    _assert_one_error(capsys, tmp_path / "out", "checkpoint directory not found")
    assert hf_to_mg(tiny_models["qwen2"], tmp_path / "mg", (2, 1, 1)) == 0
    shard = mcore_layout.find_checkpoint(tmp_path / "mg").path(1, 0, 0)
    shard.unlink()
    assert mg_to_hf(tmp_path / "mg", tmp_path / "out") == 2
    _assert_one_error(capsys, tmp_path / "out", "missing, e.g.", "mp_rank_01")


def test_nothing_to_do_is_an_error(tmp_path, capsys):
    assert main(["--load-dir", str(tmp_path)]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_shard_size_units():
    from cli.convert_ckpt import parse_size

    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MiB") == 500 * 2**20
    assert parse_size("1000") == 1000
    with pytest.raises(Exception, match="expected a size such as 5GB"):
        parse_size("5XB")
