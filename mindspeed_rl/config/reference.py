"""Generate docs/configuration.md from the typed config: ``python -m mindspeed_rl.config.reference``.

A test compares the committed file with this output, so the reference never drifts from the code.
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mindspeed_rl.config import unsupported
from mindspeed_rl.config.schema import (
    GenerateConfig,
    MegatronConfig,
    ModelConfig,
    ProfilerConfig,
    RLConfig,
    Section,
)

_HEADER = """# Configuration reference

Generated from `mindspeed_rl/config/schema.py` by `make docs-config`
(`python -m mindspeed_rl.config.reference > docs/configuration.md`); a test fails when it is stale.

A training YAML (`configs/<name>.yaml`, chosen with `--config-name NAME`) has the sections below.
`defaults: [{model: [NAME]}]` merges `configs/model/NAME.yaml` under `model`. `actor_config` takes the
same keys as `megatron_training` and overrides it for the actor. Any key can be overridden on the
command line as `section.key=value` (YAML-typed: `rl_config.epochs=2`, `rl_config.verifier_function=[acc_for_dapo]`).
Validate a config with `python cli/train_dapo.py --config-name NAME --dry-run`: it prints the
resolved YAML and the run plan, or every problem at once (exit 2).

Numbers are read as OmegaConf (Hydra) reads them, so the Ascend suite's YAMLs mean the same here:
`lr: 5e-5`, `1e-06`, `1E3` are floats (plain YAML 1.1 would make them strings), and so are the same
spellings in `key=value` overrides. Types are strict (`"8"` is not an int). Unknown keys are errors with a suggestion. Keys of the Ascend
suite that are not fields here are listed at the end: accepted at the value this project behaves as,
accepted without effect (performance switches, named in one INFO line per run), or refused by name.
Coming from MindSpeed-RL: [coming_from_mindspeed_rl.md](coming_from_mindspeed_rl.md) says what every
key of its recipes does here.
"""


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "**required**"
    if isinstance(field.default, BaseModel):
        return "(section)"
    return f"`{field.default!r}`"


def _table(title: str, model: type[Section], note: str = "") -> list[str]:
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            nested.append((name, annotation))
            type_name = "section"
        else:
            type_name = _type_name(annotation)
        lines.append(f"| `{name}` | {type_name} | {_default(field)} | {field.description or ''} |")
    lines.append("")
    for name, sub in nested:
        lines += _table(f"{title}.{name}", sub)
    return lines


def _shown(section: str) -> str:
    if section == "megatron_training":
        return "megatron_training / actor_config"
    return "model.NAME" if section == "model" else section


def render() -> str:
    lines = [_HEADER]
    lines += _table("megatron_training / actor_config", MegatronConfig)
    lines += _table("rl_config", RLConfig)
    lines += _table("generate_config", GenerateConfig)
    lines += _table("profiler", ProfilerConfig)
    lines += _table(
        "model.NAME (configs/model/NAME.yaml)",
        ModelConfig,
        "Megatron / MindSpeed-LLM argument names; one top-level key per file, the model name.",
    )
    lines += ["## Keys of the Ascend suite accepted at the value we behave as", ""]
    lines += ["| section | key | accepted value |", "|---|---|---|"]
    for section, keys in unsupported.UNSUPPORTED.items():
        if section == "actor_config":
            continue
        for key in keys:
            inert = unsupported.inert_description(section, key)
            lines.append(f"| {_shown(section)} | `{key}` | {inert} |")
    lines += ["", "## Keys of the Ascend suite accepted without effect (one INFO line per run)", ""]
    lines += ["| section | key | why |", "|---|---|---|"]
    for section, keys in unsupported.NO_EFFECT.items():
        if section == "actor_config":
            continue
        for key, why in keys.items():
            lines.append(f"| {_shown(section)} | `{key}` | {why} |")
    lines += ["", "## Keys of the Ascend suite that refuse the run when true", ""]
    lines += ["| section | key | why |", "|---|---|---|"]
    for section, keys in unsupported.REFUSED_FEATURES.items():
        for key, why in keys.items():
            lines.append(f"| {_shown(section)} | `{key}` | {why} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
