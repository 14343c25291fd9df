"""Turn composed YAML data into a :class:`RunConfig`, reporting every problem at once.

Order: unknown keys (with a "did you mean"), recognised-but-unsupported keys, types and ranges
(pydantic), then cross-field rules (``checks.py``) and registry checks passed in by the caller.
Each problem names where the key came from (file or command line), the dotted key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
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


class _Findings:
    """What the key scan found besides problems: accepted keys without effect, refused features."""

    def __init__(self) -> None:
        self.no_effect: list[str] = []
        self.refused: list[Problem] = []


def _check_keys(
    data: dict,
    model: type[Section],
    prefix: str,
    section: str | None,
    where,
    problems: list,
    findings: _Findings | None = None,
) -> dict:
    """Report unknown / unsupported keys; return the data with them removed."""
    clean = {}
    unsupported_here = unsupported.UNSUPPORTED.get(section, {}) if section else {}
    no_effect_here = unsupported.NO_EFFECT.get(section, {}) if section else {}
    refused_here = unsupported.REFUSED_FEATURES.get(section, {}) if section else {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        if key in model.model_fields:
            nested = _nested_section(model, key)
            if nested is not None and isinstance(value, dict):
                value = _check_keys(value, nested, dotted, None, where, problems)
            clean[key] = value
        elif key in refused_here:
            if value not in (None, False) and findings is not None:
                findings.refused.append(Problem(where(dotted), dotted, refused_here[key]))
        elif key in no_effect_here:
            if findings is not None:
                findings.no_effect.append(dotted)
        elif key in unsupported_here:
            if not unsupported.is_inert(section, key, value, data):
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


def _build(
    model: type[Section], body: dict, problems: list[Problem], describe
) -> tuple[Section | None, set[str]]:
    """``model(**body)``; on type errors report them and build again without the offending keys
    (their defaults stand in), so that the cross-field rules still run on everything else.
    Returns the section (None if even that fails: a required key is missing or broken) and the
    names of the keys that were dropped."""
    try:
        return model(**body), set()
    except pydantic.ValidationError as err:
        problems.extend(describe(err))
        broken = {str(item["loc"][0]) for item in err.errors() if item["loc"]}
    try:
        return model(**{k: v for k, v in body.items() if k not in broken}), broken
    except pydantic.ValidationError:
        return None, broken


def _validate_models(
    data: Any, where, problems: list[Problem], findings: _Findings, masked: set[str]
) -> tuple[dict[str, ModelConfig], set[str]]:
    """The model entries that validate (a refused optional key replaced by its default, named in
    ``masked``), and the names of those that cannot be built."""
    models: dict[str, ModelConfig] = {}
    failed: set[str] = set()
    if data is None:
        return models, failed
    if not isinstance(data, dict):
        problems.append(
            Problem(where("model"), "model", "expected a mapping of model name -> keys")
        )
        return models, failed
    for name, body in data.items():
        prefix = f"model.{name}"
        if not isinstance(body, dict):
            problems.append(Problem(where(prefix), prefix, "expected a mapping of model keys"))
            failed.add(str(name))
            continue
        body = _check_keys(body, ModelConfig, prefix, "model", where, problems, findings)
        built, broken = _build(
            ModelConfig, body, problems, lambda err, p=prefix: _pydantic_problems(err, p, where)
        )
        masked |= {f"{prefix}.{key}" for key in broken}
        if built is None:
            failed.add(str(name))
        else:
            models[str(name)] = built
    return models, failed


def _stage_defaults(data: dict) -> None:
    """``stage``'s defaults (``STAGE_RL_DEFAULTS``) under the raw rl_config, before it is built:
    ray_grpo is this loop with a KL loss against the reference unless the YAML says otherwise."""
    actor = {**(data.get("megatron_training") or {}), **(data.get("actor_config") or {})}
    stage = actor.get("stage", "ray_dapo")
    defaults = STAGE_RL_DEFAULTS.get(stage, {}) if isinstance(stage, str) else {}
    rl = data.get("rl_config")
    if defaults and isinstance(rl, dict):
        data["rl_config"] = {**defaults, **rl}


def _response_cap_default(data: dict) -> None:
    """``rl_config.rollout_max_tokens`` (the response width here; in the suite only the overlong
    penalty's cap) defaults to ``sampling_config.max_tokens``: the suite's GRPO recipes set the
    latter only."""
    rl, gen = data.get("rl_config"), data.get("generate_config")
    if not isinstance(rl, dict) or "rollout_max_tokens" in rl or not isinstance(gen, dict):
        return
    sampling = gen.get("sampling_config")
    if isinstance(sampling, dict) and "max_tokens" in sampling:
        data["rl_config"] = {**rl, "rollout_max_tokens": sampling["max_tokens"]}


# what a rule's message calls the quantities that follow from a key
_DERIVED_NAMES = {
    "tensor_model_parallel_size": ("TP", "DP"),
    "pipeline_model_parallel_size": ("PP", "DP"),
    "context_parallel_size": ("CP", "DP"),
    "expert_model_parallel_size": ("EP",),
    "actor_resource": ("num_npus", "DP"),
}


def _drop_masked(problems: list[Problem], masked: set[str]) -> list[Problem]:
    """Cross-field problems that rest on a key whose own value was refused (its default stood
    in): those about the key, or whose message names it or what follows from it."""
    names = set()
    for dotted in masked:
        field = dotted.rsplit(".", 1)[-1]
        names |= {field, *_DERIVED_NAMES.get(field, ())}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")

    def rests_on_masked(problem: Problem) -> bool:
        about = any(problem.key == m or problem.key.startswith(m + ".") for m in masked)
        return about or bool(names and pattern.search(problem.message))

    return [p for p in problems if not rests_on_masked(p)]


def validate(
    data: dict, where: Callable[[str], str], extra_checks: Iterable[Callable] = ()
) -> RunConfig:
    """Validate composed data; raise ConfigError with every problem found.

    Type errors do not hide the cross-field rules: the offending keys are reported, their
    defaults stand in, and the rules run on the rest (their findings about the offending keys
    are dropped). Only a missing required key or a refused feature stops before them."""
    from mindspeed_rl.config.checks import cross_field_problems, cross_field_warnings

    problems: list[Problem] = []
    findings = _Findings()
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
    data = dict(data)
    _stage_defaults(data)
    _response_cap_default(data)
    sections: dict[str, dict] = {}
    for name, model in SECTIONS.items():
        body = data.get(name) or {}
        if not isinstance(body, dict):
            problems.append(Problem(where(name), name, "expected a mapping"))
            body = {}
        sections[name] = _check_keys(body, model, name, name, where, problems, findings)
    if findings.refused:
        # a kind of run this project does not do: its other keys would only add noise
        raise ConfigError(findings.refused)
    masked: set[str] = set()
    models, failed_models = _validate_models(data.get("model"), where, problems, findings, masked)

    actor_data = {**sections.pop("megatron_training"), **sections.pop("actor_config")}
    actor_keys = set(data.get("actor_config") or {})

    stage = actor_data.get("stage", "ray_dapo")
    stage_defaults = STAGE_RL_DEFAULTS.get(stage, {}) if isinstance(stage, str) else {}
    sections["rl_config"] = {**stage_defaults, **sections["rl_config"]}

    def actor_origin(key: str) -> str:
        return "actor_config" if key in actor_keys else "megatron_training"

    typed: dict[str, Any] = {}
    complete = True
    for name, body in [("actor", actor_data), *sections.items()]:
        model = SECTIONS["megatron_training"] if name == "actor" else SECTIONS[name]
        origin = actor_origin if name == "actor" else None
        built, broken = _build(
            model, body, problems,
            lambda err, n=name, o=origin: _pydantic_problems(err, n, where, o),
        )  # fmt: skip
        if built is None:
            complete = False
            continue
        typed[name] = built
        prefixes = ("megatron_training", "actor_config") if name == "actor" else (name,)
        masked |= {f"{prefix}.{key}" for prefix in prefixes for key in broken}
    if not complete:
        raise ConfigError(problems)

    actor = typed["actor"]
    if actor.model not in models:
        if actor.model not in failed_models:
            key = "actor_config.model" if "model" in actor_keys else "megatron_training.model"
            problems.append(
                Problem(
                    where(key),
                    key,
                    f"'{actor.model}' is not a model of this config; defined: "
                    f"{sorted(models | dict.fromkeys(failed_models))} (add it under defaults: "
                    "- model: [...])",
                )
            )
        raise ConfigError(problems)
    config = RunConfig(models=models, **typed)
    later: list[Problem] = cross_field_problems(config, where)
    for check in extra_checks:
        later.extend(check(config, where))
    problems.extend(_drop_masked(later, masked))
    if problems:
        raise ConfigError(problems)
    if findings.no_effect:
        config.notices.append(
            ("info", "keys of the Ascend suite accepted without effect here (performance "
                     "switches and transport sizes, docs/coming_from_mindspeed_rl.md): "
                     + ", ".join(findings.no_effect))
        )  # fmt: skip
    config.notices.extend(("warning", message) for message in cross_field_warnings(config))
    return config
