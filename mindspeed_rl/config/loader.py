"""Load ``configs/<name>.yaml``: ``defaults`` composition, command-line overrides, validation.

Composition follows the Ascend suite's layout: ``defaults: [{model: [qwen25_32b]}]`` merges
``configs/model/qwen25_32b.yaml`` (one top-level key, the model name) under ``model``. Overrides are
``section.key=value`` with YAML-typed values (OmegaConf's dotlist grammar), applied last. All
problems are collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mindspeed_rl.config.schema import RunConfig
from mindspeed_rl.config.validation import ConfigError, Problem, validate
from mindspeed_rl.config.yaml_loader import describe_yaml_error, load_yaml

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
COMMAND_LINE = "command line"

# A check that needs a registry built in a higher layer (verifier names, model types): it receives
# the validated config and a function naming where a dotted key came from, and returns problems.
# The registries provide these; the CLI passes them in (config/ never imports upward).
ExtraCheck = Callable[[RunConfig, Callable[[str], str]], list[Problem]]


@dataclasses.dataclass
class ConfigSources:
    """Where each part of the composed config came from, for error messages."""

    main: Path
    models: dict[str, Path] = dataclasses.field(default_factory=dict)
    overridden: set[str] = dataclasses.field(default_factory=set)
    in_files: set[str] = dataclasses.field(default_factory=set)  # dotted keys the YAMLs hold

    def where(self, dotted_key: str) -> str:
        if any(dotted_key == k or dotted_key.startswith(k + ".") for k in self.overridden):
            return COMMAND_LINE
        # a section or mapping that only an override created (rl_confg.epochs=2)
        if dotted_key not in self.in_files and any(
            k.startswith(dotted_key + ".") for k in self.overridden
        ):
            return COMMAND_LINE
        parts = dotted_key.split(".")
        if parts[0] == "model" and len(parts) > 1 and parts[1] in self.models:
            return str(self.models[parts[1]])
        return str(self.main)


def _config_file(config_dir: Path, name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    return config_dir / f"{name}.yaml"


def _read_yaml(path: Path, problems: list[Problem], what: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except FileNotFoundError:
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        problems.append(
            Problem(str(path), what, f"file not found; available in {path.parent}: {available}")
        )
        return None
    except yaml.YAMLError as err:
        problems.append(Problem(str(path), what, describe_yaml_error(err)))
        return None
    except (OSError, UnicodeDecodeError) as err:  # a directory, no permission, not UTF-8
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        problems.append(Problem(str(path), what, f"cannot read it: {reason}"))
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(str(path), what, "expected a mapping at the top level"))
        return None
    return data


def _default_entries(defaults: Any, sources: ConfigSources, problems: list[Problem]):
    """Yield (group, option) pairs of a Hydra-style defaults list."""
    if not isinstance(defaults, list):
        problems.append(Problem(str(sources.main), "defaults", "expected a list"))
        return
    for entry in defaults:
        if entry == "_self_":
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(
                Problem(
                    str(sources.main), "defaults", f"entry {entry!r}: expected {{model: [name]}}"
                )
            )
            continue
        ((group, options),) = entry.items()
        for option in options if isinstance(options, list) else [options]:
            yield group, option


def _compose_models(config_dir: Path, raw: dict, sources: ConfigSources, problems: list[Problem]):
    models: dict[str, Any] = dict(raw.get("model") or {})
    for group, option in _default_entries(raw.pop("defaults", []), sources, problems):
        if group != "model":
            problems.append(
                Problem(str(sources.main), f"defaults.{group}", "unknown group; valid: model")
            )
            continue
        if not isinstance(option, str):
            problems.append(Problem(str(sources.main), "defaults.model", f"{option!r}: not a name"))
            continue
        path = config_dir / "model" / f"{option}.yaml"
        data = _read_yaml(path, problems, f"defaults.model: {option}")
        if data is None:
            continue
        for name, body in data.items():
            sources.models[str(name)] = path
            models[str(name)] = body
    if models:
        raw["model"] = models


def _dotted_keys(data: dict, prefix: str = ""):
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(value, dict):
            yield from _dotted_keys(value, dotted + ".")


def _parse_overrides(overrides: Sequence[str], problems: list[Problem]) -> tuple[dict, set[str]]:
    parsed: dict = {}
    keys: set[str] = set()
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key or "." not in key:
            problems.append(
                Problem(COMMAND_LINE, item, "expected section.key=value, e.g. rl_config.epochs=2")
            )
            continue
        try:
            conf = OmegaConf.from_dotlist([item.lstrip("+")])
        except OmegaConfBaseException as err:
            problems.append(Problem(COMMAND_LINE, key, f"cannot parse {item!r}: {err}"))
            continue
        parsed = OmegaConf.to_container(OmegaConf.merge(parsed, conf))
        keys.add(key)
    return parsed, keys


def compose(
    config_name: str, config_dir: Path | str | None = None, overrides: Sequence[str] = ()
) -> tuple[dict, ConfigSources]:
    """The composed, override-applied config as plain data (not validated yet)."""
    config_dir = Path(config_dir) if config_dir is not None else DEFAULT_CONFIG_DIR
    if not config_dir.is_dir():
        state = "is a file" if config_dir.exists() else "does not exist"
        raise ConfigError(
            [Problem(COMMAND_LINE, "--config-path", f"{config_dir} {state}; give the directory "
                     "holding <config-name>.yaml and model/ (default: the repository's configs/)")]
        )  # fmt: skip
    main = _config_file(config_dir, config_name)
    sources = ConfigSources(main=main)
    problems: list[Problem] = []
    raw = _read_yaml(main, problems, f"--config-name {config_name}")
    if raw is None:
        raise ConfigError(problems)
    _compose_models(config_dir, raw, sources, problems)
    sources.in_files = set(_dotted_keys(raw))
    parsed, sources.overridden = _parse_overrides(overrides, problems)
    if problems:
        raise ConfigError(problems)
    try:
        merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.create(parsed))
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError([Problem(str(main), "(interpolation)", str(err))]) from err
    return data, sources


def load_config(
    config_name: str,
    config_dir: Path | str | None = None,
    overrides: Sequence[str] = (),
    extra_checks: Iterable[ExtraCheck] = (),
) -> RunConfig:
    """Compose, validate and return the typed config; raises ConfigError listing every problem."""
    data, sources = compose(config_name, config_dir, overrides)
    return validate(data, sources.where, extra_checks)
