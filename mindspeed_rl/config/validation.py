"""Turn composed YAML data into a :class:`RunConfig`, reporting every problem at once.

Order: unknown keys (with a "did you mean"), recognised-but-unsupported keys, types and ranges
(pydantic), then cross-field rules (``checks.py``) and registry checks passed in by the caller.
Each problem names where the key came from (file or command line), the dotted key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable
from typing import Any, get_args

import pydantic

from mindspeed_rl.config import unsupported
from mindspeed_rl.config.schema import (
    SECTIONS,
    STAGE_RL_DEFAULTS,
    ModelConfig,
    RunConfig,
    Section,
)

TOP_LEVEL_KEYS = ("model", *SECTIONS)


@dataclasses.dataclass(frozen=True)
class Problem:
    where: str  # a file or "command line"
    key: str  # dotted key
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}"


class ConfigError(ValueError):
    """All problems of one config; ``str()`` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _suggest(key: str, valid: Iterable[str]) -> str:
    """A near match, or else every valid name: the message always says what would be valid."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(sorted(valid))}"


def _nested_section(model: type[Section], field: str) -> type[Section] | None:
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def _check_keys(
    data: dict, model: type[Section], prefix: str, section: str | None, where, problems: list
) -> dict:
    """Report unknown / unsupported keys; return the data with them removed."""
    clean = {}
    unsupported_here = unsupported.UNSUPPORTED.get(section, {}) if section else {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        if key in model.model_fields:
            nested = _nested_section(model, key)
            if nested is not None and isinstance(value, dict):
                value = _check_keys(value, nested, dotted, None, where, problems)
            clean[key] = value
        elif key in unsupported_here:
            if not unsupported.is_inert(section, key, value):
                problems.append(
                    Problem(
                        where(dotted),
                        dotted,
                        f"recognised, not supported yet (value {value!r}); remove it or set it "
                        f"to {unsupported.inert_description(section, key)}" + unsupported.hint(key),
                    )
                )
        else:
            problems.append(
                Problem(where(dotted), dotted, "unknown key" + _suggest(key, model.model_fields))
            )
    return clean


def _pydantic_problems(
    err: pydantic.ValidationError, prefix: str, where: Callable[[str], str], origin=None
) -> list[Problem]:
    problems = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        head = origin(item["loc"][0]) if origin is not None else prefix
        dotted = f"{head}.{loc}" if loc else head
        message = item["msg"]
        if item["type"] == "missing":
            message = "required key is missing"
        elif "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        problems.append(Problem(where(dotted), dotted, message))
    return problems


def _validate_models(data: Any, where, problems: list[Problem]) -> dict[str, ModelConfig]:
    models: dict[str, ModelConfig] = {}
    if data is None:
        return models
    if not isinstance(data, dict):
        problems.append(
            Problem(where("model"), "model", "expected a mapping of model name -> keys")
        )
        return models
    for name, body in data.items():
        prefix = f"model.{name}"
        if not isinstance(body, dict):
            problems.append(Problem(where(prefix), prefix, "expected a mapping of model keys"))
            continue
        body = _check_keys(body, ModelConfig, prefix, None, where, problems)
        try:
            models[str(name)] = ModelConfig(**body)
        except pydantic.ValidationError as err:
            problems.extend(_pydantic_problems(err, prefix, where))
    return models


def validate(
    data: dict, where: Callable[[str], str], extra_checks: Iterable[Callable] = ()
) -> RunConfig:
    """Validate composed data; raise ConfigError with every problem found."""
    from mindspeed_rl.config.checks import cross_field_problems

    problems: list[Problem] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(
                Problem(
                    where(key),
                    key,
                    f"unknown section; {hint}valid sections: {', '.join(TOP_LEVEL_KEYS)}",
                )
            )
    sections: dict[str, dict] = {}
    for name, model in SECTIONS.items():
        body = data.get(name) or {}
        if not isinstance(body, dict):
            problems.append(Problem(where(name), name, "expected a mapping"))
            body = {}
        sections[name] = _check_keys(body, model, name, name, where, problems)
    models = _validate_models(data.get("model"), where, problems)

    actor_data = {**sections.pop("megatron_training"), **sections.pop("actor_config")}
    actor_keys = set(data.get("actor_config") or {})

    stage = actor_data.get("stage", "ray_dapo")
    stage_defaults = STAGE_RL_DEFAULTS.get(stage, {}) if isinstance(stage, str) else {}
    sections["rl_config"] = {**stage_defaults, **sections["rl_config"]}

    def actor_origin(key: str) -> str:
        return "actor_config" if key in actor_keys else "megatron_training"

    typed: dict[str, Any] = {}
    built = True
    for name, body in [("actor", actor_data), *sections.items()]:
        model = SECTIONS["megatron_training"] if name == "actor" else SECTIONS[name]
        try:
            typed[name] = model(**body)
        except pydantic.ValidationError as err:
            built = False
            origin = actor_origin if name == "actor" else None
            problems.extend(_pydantic_problems(err, name, where, origin))
    if not built or len(models) != len(data.get("model") or {}):
        raise ConfigError(problems)

    # Unknown keys were dropped above, so the typed sections exist: go on to the cross-field
    # rules so that one run reports everything.
    actor = typed["actor"]
    if actor.model not in models:
        key = (
            "actor_config.model"
            if "model" in (data.get("actor_config") or {})
            else ("megatron_training.model")
        )
        problems.append(
            Problem(
                where(key),
                key,
                f"'{actor.model}' is not a model of this config; defined: {sorted(models)} "
                "(add it under defaults: - model: [...])",
            )
        )
        raise ConfigError(problems)
    config = RunConfig(models=models, **typed)
    problems.extend(cross_field_problems(config, where))
    for check in extra_checks:
        problems.extend(check(config, where))
    if problems:
        raise ConfigError(problems)
    return config
