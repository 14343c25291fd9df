"""Every key of the schema is read by the code it configures: a field that is validated and then
read by nothing would let a YAML ask for something that silently does not happen. Such keys are
implemented, or moved to config/unsupported.py ("recognised, not supported yet").

The scan is by name: an attribute access ``.<field>`` (or ``getattr(x, "<field>")``) anywhere in
mindspeed_rl/ outside config/, or in cli/. Fields read by name through a list of names are
allowed below, each with the list that reads them.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from mindspeed_rl.config.schema import SECTIONS, ModelConfig, RunConfig, Section
from mindspeed_rl.config.validation import ConfigError
from mindspeed_rl.platform.megatron_setup import MINDSPEED_FUSION_KEYS
from mindspeed_rl.trainer.config_entry import load_run_config

REPO = Path(__file__).resolve().parents[2]

# field -> why it counts as read without an attribute access
READ_BY_NAME = {
    # platform/megatron_setup.py hands the actor config's model_dump() to MindSpeed on NPU and
    # logs them as ignored elsewhere, by these names
    **{key: "MINDSPEED_FUSION_KEYS" for key in MINDSPEED_FUSION_KEYS},
}


def _single_valued(model: type[Section], name: str) -> bool:
    """A Literal of one value: validation refuses anything but the only behaviour there is."""
    kind = model.model_fields[name].annotation
    return typing.get_origin(kind) is typing.Literal and len(typing.get_args(kind)) == 1


def _sections() -> dict[str, type[Section]]:
    found = {"model": ModelConfig, **SECTIONS}
    pending = list(found.values())
    while pending:  # nested sections (sampling_config, actor_resource, ...)
        for field in pending.pop().model_fields.values():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, Section) and kind not in found.values():
                found[kind.__name__] = kind
                pending.append(kind)
    return found


def _names_read() -> set[str]:
    files = [p for p in (REPO / "mindspeed_rl").rglob("*.py") if "config" not in p.parts[-2:-1]]
    files += list((REPO / "cli").glob("*.py"))
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                names.add(node.args[1].value)
    return names


def test_every_schema_field_is_read_outside_config():
    read = _names_read()
    unread = sorted(
        f"{section}.{name}"
        for section, model in _sections().items()
        for name in model.model_fields
        if name not in read
        and name not in READ_BY_NAME
        and not _single_valued(model, name)
        and model is not RunConfig
    )
    assert not unread, (
        f"validated but read by nothing: {unread}; implement them or move them to "
        "config/unsupported.py"
    )


def test_the_scan_sees_reads_and_the_allow_list_is_needed():
    read = _names_read()
    assert {"n_samples_per_prompt", "clip_ratio_high", "max_tokens"} <= read
    assert "no_such_field_anywhere" not in read
    for key in READ_BY_NAME:
        assert key not in read, f"{key} is read as an attribute: drop it from READ_BY_NAME"


REFUSED = [
    ("rl_config.zmq_communication=true", "rl_config.zmq_communication"),
    ("rl_config.gamma=0.9", "rl_config.gamma"),
    ("megatron_training.distributed_backend=gloo", "megatron_training.distributed_backend"),
    ("megatron_training.no_masked_softmax_fusion=false",
     "megatron_training.no_masked_softmax_fusion"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "key"), REFUSED)
def test_unimplemented_keys_are_refused_by_name(override, key):
    with pytest.raises(ConfigError) as info:
        load_run_config("dapo_qwen25_32b_A3", overrides=[override])
    (problem,) = [p for p in info.value.problems if p.key == key]
    assert "recognised, not supported yet" in problem.message


def test_inert_spellings_of_the_shipped_recipes_are_accepted():
    config = load_run_config(
        "dapo_qwen25_32b_A3",
        overrides=["megatron_training.distributed_backend=nccl", "rl_config.guarantee_order=false",
                   "megatron_training.no_gradient_accumulation_fusion=true"],
    )  # fmt: skip
    assert config.rl_config.n_samples_per_prompt == 8


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [(["megatron_training.seq_length=97"], "megatron_training.seq_length",
      "97 exceeds generate_config.max_model_len = 96"),
     (["profiler.enable=true", "profiler.ranks=[0,2]"], "profiler.ranks", "[2] are not ranks")],
)  # fmt: skip
def test_seq_length_and_profiler_ranks_are_checked(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_run_config("quickstart_cpu", overrides=overrides)
    (problem,) = [p for p in info.value.problems if p.key == key]
    assert fragment in problem.message
