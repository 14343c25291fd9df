"""``--max-restarts`` / ``rl_config.max_restarts``: what is retried, from where, how often.

The whole path (a node killed and restarted, the run finishing equal to an uninterrupted one) runs
on two namespaced nodes in ``test_two_nodes.py``; here the decisions, on real checkpoint trackers
and the real config, with ``run_training`` replaced by a scripted sequence of outcomes."""

from __future__ import annotations

import logging

import pytest

import mindspeed_rl.trainer.launch as launch
from cli.train_dapo import main as train_main
from mindspeed_rl.checkpoint import mcore_layout
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.trainer.config_entry import load_run_config
from mindspeed_rl.trainer.restart import NodeLostError, resume_config, run_with_restarts
from mindspeed_rl.workers.group import WorkerError, WorkerInputError


def _config(tmp_path, *extra):
    return load_run_config(
        "quickstart_cpu", overrides=[f"actor_config.save={tmp_path / 'ck'}", *extra]
    )


def _tracker(tmp_path, iteration):
    root = tmp_path / "ck"
    (root / mcore_layout.iteration_dir_name(iteration)).mkdir(parents=True, exist_ok=True)
    (root / mcore_layout.TRACKER_FILE).write_text(str(iteration))


def _scripted(monkeypatch, outcomes):
    """run_training that raises or returns the next outcome, recording each config it got."""
    seen = []

    def fake(config, log_dir=None):
        seen.append(config)
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(launch, "run_training", fake)
    return seen


def test_a_failure_resumes_from_the_last_complete_checkpoint(tmp_path, monkeypatch, caplog):
    config = _config(tmp_path)
    _tracker(tmp_path, 3)
    seen = _scripted(
        monkeypatch, [NodeLostError("node 10.0.0.2 (Ray node ab) lost with rank(s) [1]"), "done"]
    )
    with caplog.at_level(logging.WARNING, logger="mindspeed_rl.trainer.restart"):
        assert run_with_restarts(config, None, 1) == "done"
    first, second = seen
    assert first is config
    assert second.actor.load == str(tmp_path / "ck") and second.actor.finetune is False
    assert second.actor.ckpt_step is None and not second.actor.no_load_optim
    text = caplog.text
    assert "restart 1 of 1 after: node 10.0.0.2" in text
    assert f"resuming from {tmp_path / 'ck'} iteration 3" in text


def test_restarts_stop_at_the_limit_and_bad_input_is_never_retried(tmp_path, monkeypatch):
    config = _config(tmp_path)
    seen = _scripted(monkeypatch, [WorkerError("rank 0 died"), WorkerError("rank 1 died")])
    with pytest.raises(WorkerError, match="rank 1 died"):
        run_with_restarts(config, None, 1)
    assert len(seen) == 2
    # no checkpoint yet: the restart starts the run over with the original config
    assert seen[1] is config
    seen = _scripted(monkeypatch, [WorkerInputError("rank 0 refused its input")])
    with pytest.raises(WorkerInputError):
        run_with_restarts(config, None, 5)
    assert len(seen) == 1
    seen = _scripted(monkeypatch, [WorkerError("rank 0 died")])
    with pytest.raises(WorkerError):
        run_with_restarts(config, None, 0)
    assert len(seen) == 1


def test_resume_config_names_the_tracker_iteration(tmp_path):
    config = _config(tmp_path)
    assert resume_config(config) == (config, None)
    _tracker(tmp_path, 2)
    resumed, iteration = resume_config(config)
    assert iteration == 2 and resumed.actor.load == str(tmp_path / "ck")


def test_max_restarts_comes_from_the_yaml_and_the_flag_wins(tmp_path, monkeypatch):
    got = []
    monkeypatch.setattr("mindspeed_rl.trainer.restart.run_with_restarts",
                        lambda config, log_dir, n: got.append(n))  # fmt: skip
    assert train_main(["--config-name", "quickstart_cpu", "rl_config.max_restarts=3"]) == 0
    assert train_main(["--config-name", "quickstart_cpu", "rl_config.max_restarts=3",
                       "--max-restarts", "1"]) == 0  # fmt: skip
    assert got == [3, 1]
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config-name", "quickstart_cpu", "--max-restarts", "-1"])
    assert exit_info.value.code == 2
    with pytest.raises(ConfigError, match="max_restarts"):
        load_run_config("quickstart_cpu", overrides=["rl_config.max_restarts=-1"])
