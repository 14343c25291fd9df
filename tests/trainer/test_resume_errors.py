"""Checkpoint errors found inside the Ray workers reach the user as the worker's own one line,
naming the file, with exit 2 (docs/resume.md): not Ray's wrapper with remote frames and exit 1.
Through the real command and real workers, since the wrapping is Ray's."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from mindspeed_rl.checkpoint import mcore_layout

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _train_dapo():
    spec = importlib.util.spec_from_file_location("_cli_train", REPO / "cli" / "train_dapo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argv(assets, load: Path, *extra: str) -> list[str]:
    paths, _ = assets
    return ["--config-name", "quickstart_cpu",
            f"megatron_training.tokenizer_name_or_path={paths['hf']}",
            f"megatron_training.data_path={paths['data']}", f"actor_config.load={load}",
            "megatron_training.train_iters=1", "rl_config.validate_before_train=false",
            *extra]  # fmt: skip


def _truncated_copy(assets, tmp_path: Path) -> tuple[Path, Path]:
    load = tmp_path / "ckpt"
    shutil.copytree(assets[0]["mcore"], load)
    shard = mcore_layout.find_checkpoint(load).path(0, 0, 0)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return load, shard


# case -> (extra overrides, fragments of the line besides the file)
CASES = {
    "truncated shard": ((), ["model_optim_rng.pt: cannot be read as a Megatron checkpoint shard"]),
    # a TP 1 checkpoint for a TP 2 run
    "other layout": (("actor_config.tensor_model_parallel_size=2",), ["TP"]),
    "other model size": (("model.tiny_qwen2.ffn_hidden_size=512",),
                         ["does not fit the model", "checkpoint (512, 128) vs model (1024, 128)"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_worker_checkpoint_errors_are_one_line_and_exit_2(case, assets, tmp_path, capsys):
    extra, fragments = CASES[case]
    load = assets[0]["mcore"]
    if case == "truncated shard":
        load, _ = _truncated_copy(assets, tmp_path)
    assert _train_dapo().main(_argv(assets, load, *extra)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("train_dapo: error: worker rank "), err[-2000:]
    assert "Traceback" not in err and "RayTaskError" not in last, err[-2000:]
    for fragment in [str(load), *fragments]:
        assert fragment in last, last
