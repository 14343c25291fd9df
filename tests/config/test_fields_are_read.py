"""Every key of the schema is read by the code it configures: a field that is validated and then
read by nothing would let a YAML ask for something that silently does not happen. Such keys are
implemented, or moved to config/unsupported.py ("recognised, not supported yet").

The scan qualifies the owner: a read of ``megatron_training.num_workers`` is an attribute access
``.num_workers`` (or ``getattr(x, "num_workers")``) on a receiver that names that section --
``actor.num_workers``, ``actor_cfg.num_workers``, ``config.actor.num_workers``, or a name annotated
with the section's class in that module (``config: MegatronConfig``) -- anywhere in mindspeed_rl/
outside config/, or in cli/. A same-named attribute of something else (a process pool's
``num_workers``, the model section's ``attention_softmax_in_fp32``) does not count. Fields read by
name through a list of names, or honoured by a check in config/, are allowed below, each with
the list or check that reads them.
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

# section -> the receiver names that hold it throughout the code
OWNERS = {
    "model": {"model", "model_cfg"},
    "megatron_training": {"actor", "actor_cfg", "actor_config"},
    "actor_config": {"actor", "actor_cfg", "actor_config"},
    "rl_config": {"rl", "rl_config"},
    "generate_config": {"gen", "generate_config"},
    "profiler": {"profiler"},
    "SamplingConfig": {"sampling", "sampling_config"},
    "ActorResource": {"actor_resource"},
    "IntegratedModeConfig": {"integrated_mode_config"},
}

# "section.field" -> why it counts as read without a qualified attribute access
READ_BY_NAME = {
    # platform/megatron_setup.py hands the actor config's model_dump() to MindSpeed on NPU and
    # logs them as ignored elsewhere, by these names
    **{
        f"{section}.{key}": "MINDSPEED_FUSION_KEYS"
        for key in MINDSPEED_FUSION_KEYS
        for section in ("megatron_training", "actor_config")
        if key != "use_flash_attn"  # also read by workers/packing.py (the host mask)
    },
    # config/checks.py refuses a seq_length that cannot hold prompt + response; MindSpeed reads
    # args.seq_length (platform/megatron_setup.megatron_namespace)
    "megatron_training.seq_length": "cross_field_problems",
    "actor_config.seq_length": "cross_field_problems",
    # config/checks.py accepts 1 only: the sampled token's log-prob, what every engine returns
    "SamplingConfig.logprobs": "cross_field_problems",
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


def _receiver(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _annotated(tree: ast.AST, sections: dict[str, type[Section]]) -> dict[str, set[str]]:
    """Names annotated with a section's class in this module -> those sections."""
    by_class: dict[str, set[str]] = {}
    for section, model in sections.items():  # one class may own two sections
        by_class.setdefault(model.__name__, set()).add(section)
    names: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            for word in ast.unparse(node.annotation).replace("|", " ").split():
                names.setdefault(node.arg, set()).update(by_class.get(word, ()))
    return names


def _reads() -> set[tuple[str, str]]:
    """(section, field) pairs read by an owner-qualified access."""
    sections = _sections()
    files = [p for p in (REPO / "mindspeed_rl").rglob("*.py") if "config" not in p.parts[-2:-1]]
    files += list((REPO / "cli").glob("*.py"))
    reads: set[tuple[str, str]] = set()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        local = _annotated(tree, sections)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                receiver, name = _receiver(node.value), node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                receiver, name = _receiver(node.args[0]), node.args[1].value
            else:
                continue
            owners = {s for s, names in OWNERS.items() if receiver in names}
            for section in owners | local.get(receiver, set()):
                reads.add((section, name))
    return reads


def test_every_schema_field_is_read_outside_config():
    reads = _reads()
    unread = sorted(
        f"{section}.{name}"
        for section, model in _sections().items()
        for name in model.model_fields
        if (section, name) not in reads
        and f"{section}.{name}" not in READ_BY_NAME
        and not _single_valued(model, name)
        and model is not RunConfig
    )
    assert not unread, (
        f"validated but read by nothing: {unread}; implement them or move them to "
        "config/unsupported.py"
    )


def test_the_scan_qualifies_the_owner_and_the_allow_list_is_needed():
    reads = _reads()
    assert {("rl_config", "n_samples_per_prompt"), ("SamplingConfig", "max_tokens")} <= reads
    # the model section's attention_softmax_in_fp32 builds the model; megatron_training's is
    # checked against it (models/config_check.py): two owners, two reads
    assert ("model", "attention_softmax_in_fp32") in reads
    assert ("megatron_training", "attention_softmax_in_fp32") in reads
    # a process pool's num_workers is not megatron_training.num_workers
    assert ("megatron_training", "num_workers") not in reads
    assert not any(name == "no_such_field_anywhere" for _, name in reads)
    for key in READ_BY_NAME:
        section, name = key.split(".")
        assert (section, name) not in reads, f"{key} is read as an attribute: drop it"


def test_num_workers_and_attention_softmax_are_honoured_or_refused():
    with pytest.raises(ConfigError) as info:
        load_run_config("dapo_qwen25_32b_A3", overrides=["megatron_training.num_workers=4"])
    (problem,) = [p for p in info.value.problems if p.key == "megatron_training.num_workers"]
    assert "recognised, not supported yet" in problem.message
    load_run_config("dapo_qwen25_32b_A3", overrides=["megatron_training.num_workers=0"])
    with pytest.raises(ConfigError) as info:
        load_run_config(
            "dapo_qwen25_32b_A3", overrides=["megatron_training.attention_softmax_in_fp32=false"]
        )
    key = "megatron_training.attention_softmax_in_fp32"
    (problem,) = [p for p in info.value.problems if p.key == key]
    assert "model.qwen25_32b.attention_softmax_in_fp32" in problem.message


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
    [(["megatron_training.seq_length=97", "generate_config.max_model_len=96"],
      "megatron_training.seq_length", "97 exceeds generate_config.max_model_len = 96"),
     (["profiler.enable=true", "profiler.ranks=[0,2]"], "profiler.ranks", "[2] are not ranks")],
)  # fmt: skip
def test_seq_length_and_profiler_ranks_are_checked(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_run_config("quickstart_cpu", overrides=overrides)
    (problem,) = [p for p in info.value.problems if p.key == key]
    assert fragment in problem.message
