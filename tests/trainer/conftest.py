"""Assets shared by the trainer tests: built once per session by the quickstart's own pipeline."""

import pytest

from mindspeed_rl.quickstart.pipeline import CONFIG_NAME, prepare_assets
from mindspeed_rl.trainer.config_entry import load_run_config


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dapo")
    base = load_run_config(CONFIG_NAME)
    return prepare_assets(workdir, base.model, problems=480, warm_steps=120, seed=0), workdir
