"""The four commands end on a user error with one line on stderr, exit 2 (130 for Ctrl-C), and
no traceback unless MINDSPEED_RL_DEBUG asks for it. In-process: no Ray, no device."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import ray

from mindspeed_rl.algorithms.dynamic_sampling import DynamicSamplingError
from mindspeed_rl.cli_errors import DEBUG_ENV
from mindspeed_rl.workers.group import WorkerError, WorkerInputError, input_error_of

REPO = Path(__file__).resolve().parents[2]


def _cli(name: str):
    spec = importlib.util.spec_from_file_location(f"_cli_{name}", REPO / "cli" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and "Traceback" not in err, err
    return lines[0]


# --- train_dapo -----------------------------------------------------------------------------------


def test_unsatisfiable_filter_groups_fail_the_dry_run_naming_the_keys(capsys):
    rc = _cli("train_dapo").main(
        ["--config-name", "quickstart_cpu", "--dry-run",
         "rl_config.filter_groups_train_batch_size=32", "rl_config.filter_groups_max_batches=1"]
    )  # fmt: skip
    assert rc == 2
    line = _one_line(capsys, "train_dapo: invalid config: command line: ")
    for fragment in ("rl_config.filter_groups_train_batch_size", "filter_groups_max_batches (1)",
                     "global_batch_size (16) = 16", "<= 16"):  # fmt: skip
        assert fragment in line


def test_reachable_filter_groups_pass():
    assert _cli("train_dapo").main(
        ["--config-name", "quickstart_cpu", "--dry-run",
         "rl_config.filter_groups_train_batch_size=32", "rl_config.filter_groups_max_batches=2"]
    ) == 0  # fmt: skip


@pytest.mark.parametrize(("path", "state"), [("README.md", "is a file"), ("nowhere", "does not")])
def test_config_path_that_is_not_a_directory(path, state, capsys):
    rc = _cli("train_dapo").main(["--config-name", "x", "--config-path", path, "--dry-run"])
    assert rc == 2
    line = _one_line(capsys, "train_dapo: invalid config: command line: --config-path: ")
    assert f"{path} {state}" in line


# (what run_training raises, exit status, start of the line)
RUN_FAILURES = [
    (DynamicSamplingError("dynamic sampling reached filter_groups_max_batches=1 ..."), 1,
     "train_dapo: training stopped: dynamic sampling reached filter_groups_max_batches=1"),
    (WorkerInputError("worker rank 0 refused its input in setup: /c/mp_rank_00/x.pt: truncated"),
     2, "train_dapo: error: worker rank 0 refused its input in setup: /c/mp_rank_00/x.pt"),
    (WorkerError("worker rank 1 (node ab) failed in update: ActorDiedError: died"), 1,
     "train_dapo: training failed: worker rank 1"),
    (ValueError("actor_config.load=/x: directory not found"), 2, "train_dapo: error: actor_"),
    (KeyboardInterrupt(), 130, "train_dapo: interrupted"),
]  # fmt: skip


@pytest.mark.parametrize(("raised", "status", "prefix"), RUN_FAILURES)
def test_run_time_errors_are_one_line_with_their_status(
    raised, status, prefix, monkeypatch, capsys
):
    import mindspeed_rl.trainer.launch as launch

    def run_training(config, log_dir=None):
        raise raised

    monkeypatch.setattr(launch, "run_training", run_training)
    assert _cli("train_dapo").main(["--config-name", "quickstart_cpu"]) == status
    _one_line(capsys, prefix)


def test_debug_switch_shows_the_traceback(monkeypatch, capsys):
    import mindspeed_rl.trainer.launch as launch

    def run_training(config, log_dir=None):
        raise DynamicSamplingError("stop")

    monkeypatch.setattr(launch, "run_training", run_training)
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert _cli("train_dapo").main(["--config-name", "quickstart_cpu"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("train_dapo: training stopped: stop")


def test_a_bug_keeps_its_traceback(monkeypatch):
    import mindspeed_rl.trainer.launch as launch

    def run_training(config, log_dir=None):
        raise KeyError("a bug")

    monkeypatch.setattr(launch, "run_training", run_training)
    with pytest.raises(KeyError):
        _cli("train_dapo").main(["--config-name", "quickstart_cpu"])


# --- worker errors arrive in Ray's wrapper --------------------------------------------------------


def _ray_error(cause: BaseException):
    frames = 'Traceback (most recent call last):\n  File "actor.py", line 1\n'
    return ray.exceptions.RayTaskError("setup", frames, cause).as_instanceof_cause()


def test_the_worker_input_error_is_unwrapped_from_ray_task_error():
    cause = ValueError("/ckpt/iter_0000002/mp_rank_00/model_optim_rng.pt: truncated")
    assert input_error_of(_ray_error(cause)) is cause
    assert input_error_of(_ray_error(FileNotFoundError("x"))) is not None
    assert input_error_of(_ray_error(RuntimeError("device lost"))) is None
    assert input_error_of(cause) is None  # not from a worker


# --- preprocess_data ------------------------------------------------------------------------------


def _dataset_yaml(tmp_path: Path, **values) -> str:
    fields = dict(input=str(tmp_path / "d.jsonl"), tokenizer_name_or_path="unused",
                  output_prefix=str(tmp_path / "out" / "data"),
                  handler_name="Math17kAlpacaStyleInstructionHandler")  # fmt: skip
    fields.update(values)
    path = tmp_path / "data.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1", "reward_model": {"ground_truth": "2"}}\n')
    return str(path)


def test_output_prefix_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    config = _dataset_yaml(tmp_path, output_prefix=str(tmp_path / "afile" / "sub" / "data"))
    assert _cli("preprocess_data").main([config]) == 2
    line = _one_line(capsys, "preprocess_data: error: output_prefix=")
    assert f"{tmp_path / 'afile'} is a file, not a directory" in line
    assert (tmp_path / "afile").read_text() == "x"


def test_output_prefix_in_an_unwritable_directory(tmp_path, capsys):
    import os

    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o500)
    if os.access(directory, os.W_OK):  # root writes there anyway: use a read-only filesystem
        directory = Path("/sys")
        if os.access(directory, os.W_OK) and not _sysfs_refuses_files():
            pytest.skip("no unwritable directory on this machine")
    config = _dataset_yaml(tmp_path, output_prefix=str(directory / "new" / "data"))
    assert _cli("preprocess_data").main([config]) == 2
    line = _one_line(capsys, "preprocess_data: error: output_prefix=")
    assert f"cannot write in {directory}" in line
    assert not (directory / "new").exists()


def _sysfs_refuses_files() -> bool:
    import tempfile

    try:
        with tempfile.TemporaryFile(dir="/sys"):
            return False
    except OSError:
        return True


def test_latin1_input_names_file_and_line(tmp_path, capsys):
    config = _dataset_yaml(tmp_path)
    (tmp_path / "d.jsonl").write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    assert _cli("preprocess_data").main([config]) == 2
    line = _one_line(capsys, "preprocess_data: error: input=")
    assert str(tmp_path / "d.jsonl") in line and "line 1 is not UTF-8" in line
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_yaml(capsys):
    assert _cli("preprocess_data").main([str(REPO / "README.md")]) == 2
    assert "not valid YAML: line " in _one_line(capsys, "preprocess_data: error: ")


def test_preprocess_ctrl_c(tmp_path, monkeypatch, capsys):
    module = _cli("preprocess_data")

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "preprocess_dataset", interrupted)
    assert module.main([_dataset_yaml(tmp_path)]) == 130
    _one_line(capsys, "preprocess_data: interrupted")


# --- convert_ckpt and quickstart ------------------------------------------------------------------


def test_convert_ctrl_c(tmp_path, monkeypatch, capsys):
    module = _cli("convert_ckpt")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_convert", interrupted)
    argv = ["--load-model-type", "hf", "--save-model-type", "mg", "--load-dir", str(tmp_path),
            "--save-dir", str(tmp_path / "out")]  # fmt: skip
    assert module.main(argv) == 130
    _one_line(capsys, "convert_ckpt: interrupted")


def test_convert_bad_input_is_one_line(tmp_path, capsys):
    argv = ["--load-model-type", "hf", "--save-model-type", "mg", "--load-dir",
            str(tmp_path / "missing"), "--save-dir", str(tmp_path / "out")]  # fmt: skip
    assert _cli("convert_ckpt").main(argv) == 2
    _one_line(capsys, "convert_ckpt: error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("raised", "status", "prefix"),
    [(WorkerInputError("worker rank 0 refused its input in setup: x.pt"), 2, "quickstart: error"),
     (DynamicSamplingError("stop"), 1, "quickstart: training stopped: stop"),
     (PermissionError(13, "Permission denied", "outputs"), 2, "quickstart: error: [Errno 13]"),
     (KeyboardInterrupt(), 130, "quickstart: interrupted")],
)  # fmt: skip
def test_quickstart_errors(raised, status, prefix, monkeypatch, capsys):
    module = _cli("quickstart")

    def run_quickstart(*args, **kwargs):
        raise raised

    monkeypatch.setattr(module, "run_quickstart", run_quickstart)
    assert module.main([]) == status
    _one_line(capsys, prefix)


def test_quickstart_bad_override_is_one_line(capsys):
    assert _cli("quickstart").main(["rl_config.epochz=1"]) == 2
    assert "rl_config.epochz" in _one_line(capsys, "quickstart: invalid config: command line: ")
