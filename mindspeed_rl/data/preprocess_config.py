"""The dataset-preprocessing YAML (``configs/datasets/<name>.yaml``): keys, defaults, checks.

Keys are those of the Ascend suite's dataset YAMLs, so its files run here unchanged::

    input: ./dataset/dapo-math-17k.parquet      # parquet / json / jsonl file
    tokenizer_type: HuggingFaceTokenizer
    tokenizer_name_or_path: ./model_from_hf/qwen25-7b
    output_prefix: ./dataset/data               # the training YAML's data_path
    handler_name: Math17kAlpacaStyleInstructionHandler
    workers: 8
    log_interval: 1000
    prompt_type: empty                          # configs/model/templates.json name | chat_template
    seq_length: 2048                            # optional: longer prompts are filtered out
    dataset_additional_keys: [labels]
    map_keys: {"prompt": "prompt", "query": "", "response": "reward_model", "system": ""}

Every check raises ``ValueError`` naming the file, key, value and what would be valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mindspeed_rl.data.templates import DEFAULT_TEMPLATES_PATH
from mindspeed_rl.data.tokenization import SUPPORTED_TOKENIZER_TYPES

DATASET_CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs" / "datasets"

# Keys of the Ascend suite's DataHandlerConfig that change nothing here (no randomness, no cache,
# one fast tokenizer, `workers` already parallelizes): accepted, logged, ignored.
IGNORED_KEYS = frozenset(
    {
        "seed",
        "cache_dir",
        "overwrite_cache",
        "dataset_impl",
        "n_subs",
        "tokenizer_not_use_fast",
        "make_vocab_size_divisible_by",
        "pad_vocab_size_to",
    }
)
# Ascend keys for features not built here: accepted at their default value, rejected otherwise.
UNSUPPORTED_KEY_DEFAULTS: dict[str, Any] = {
    "streaming": False,
    "pack": False,
    "neat_pack": False,
    "append_eod": False,
    "split_sentences": False,
    "keep_newlines": False,
    "json_keys": ["text"],
    "interleave_probs": None,
    "script_data_dir": None,
    "hf_datasets_params": None,
    "merge_group_keys": None,
    "vocab_file": None,
    "merge_file": None,
    "placeholder_token": "ки",
    "reward_tokens": [],
    "enable_thinking": False,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """A validated dataset-preprocessing configuration (see the module docstring for keys)."""

    input: Path
    tokenizer_name_or_path: str
    output_prefix: Path
    handler_name: str
    tokenizer_type: str = "HuggingFaceTokenizer"
    workers: int = 1
    log_interval: int = 1000
    prompt_type: str = "empty"
    prompt_type_path: Path = DEFAULT_TEMPLATES_PATH
    seq_length: int | None = None
    dataset_additional_keys: tuple[str, ...] = ()
    map_keys: dict[str, str] | None = field(default=None, hash=False)
    source: str = "<dict>"  # where the values came from, for error messages

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<dict>") -> PreprocessConfig:
        """Validate ``raw`` (a parsed YAML mapping); ``source`` names it in errors."""
        where = f"{source}: "
        known = {f.name for f in fields(cls)} - {"source"}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in IGNORED_KEYS:
                continue
            if key in UNSUPPORTED_KEY_DEFAULTS:
                if value != UNSUPPORTED_KEY_DEFAULTS[key]:
                    raise ValueError(
                        f"{where}{key}={value!r} is recognised (Ascend suite) but not supported "
                        f"yet; remove it or set it to {UNSUPPORTED_KEY_DEFAULTS[key]!r}"
                    )
                continue
            if key not in known:
                raise ValueError(
                    f"{where}unknown key {key!r}; valid keys: {', '.join(sorted(known))}"
                )
            values[key] = value
        for key in ("input", "tokenizer_name_or_path", "output_prefix", "handler_name"):
            if not isinstance(values.get(key), str) or not values[key]:
                raise ValueError(f"{where}{key} is required (a non-empty string)")
        if values.get("tokenizer_type", "HuggingFaceTokenizer") not in SUPPORTED_TOKENIZER_TYPES:
            raise ValueError(
                f"{where}tokenizer_type={values['tokenizer_type']!r}; supported: "
                f"{', '.join(SUPPORTED_TOKENIZER_TYPES)}"
            )
        for key, minimum in (("workers", 1), ("log_interval", 1), ("seq_length", 1)):
            value = values.get(key)
            if value is None and key == "seq_length":
                continue
            if key in values and (
                not isinstance(value, int) or isinstance(value, bool) or value < minimum
            ):
                raise ValueError(f"{where}{key}={value!r} must be an integer >= {minimum}")
        if not isinstance(values.get("prompt_type", "empty"), str):
            raise ValueError(f"{where}prompt_type must be a template name string")
        values["input"] = Path(values["input"])
        values["output_prefix"] = Path(values["output_prefix"])
        if values.get("prompt_type_path"):
            values["prompt_type_path"] = Path(values["prompt_type_path"])
        else:
            values.pop("prompt_type_path", None)
        values["dataset_additional_keys"] = _parse_additional_keys(
            values.get("dataset_additional_keys"), where
        )
        values["map_keys"] = _parse_map_keys(values.get("map_keys"), where)
        return cls(**values, source=source)


def load_preprocess_config(name_or_path: str, overrides: Sequence[str] = ()) -> PreprocessConfig:
    """Load ``configs/datasets/<name>.yaml`` (or a YAML path) with ``key=value`` overrides."""
    import yaml

    from mindspeed_rl.config.yaml_loader import describe_yaml_error, load_yaml

    path = resolve_config_path(name_or_path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: {describe_yaml_error(exc)}") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not UTF-8
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{path}: cannot read the dataset YAML: {reason}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be a mapping of keys to values, got {type(raw).__name__}")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override {override!r} must look like key=value")
        try:
            raw[key.strip()] = load_yaml(value) if value else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"override {override!r}: {describe_yaml_error(exc)}") from exc
    return PreprocessConfig.from_dict(raw, source=str(path))


def check_output_prefix(prefix: Path) -> None:
    """``ValueError`` unless the files of ``output_prefix`` can be created: its nearest existing
    parent is a directory, and one we can write in (probed with a temporary file, removed at
    once: nothing is created before the run)."""
    import tempfile

    existing = prefix.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(
            f"output_prefix={str(prefix)!r}: {existing} is a file, not a directory; give a "
            f"prefix inside a directory, e.g. {existing.parent / 'dataset' / 'data'}"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(
            f"output_prefix={str(prefix)!r}: cannot write in {existing} ({exc.strerror}); give a "
            "prefix in a directory you can write to"
        ) from None


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path as given, or ``configs/datasets/<name>.yaml`` for a bare name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ValueError(f"dataset config {str(path)!r} does not exist")
        return path
    candidate = DATASET_CONFIGS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in DATASET_CONFIGS_DIR.glob("*.yaml"))
        raise ValueError(
            f"dataset config {name_or_path!r} not found: no file of that name and no "
            f"{candidate}; shipped configs: {', '.join(names) or 'none'}"
        )
    return candidate


def _parse_additional_keys(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # Ascend YAMLs also write `dataset_additional_keys: labels`
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
        raise ValueError(f"{where}dataset_additional_keys={value!r} must be a list of key names")
    if len(set(value)) != len(value):
        raise ValueError(f"{where}dataset_additional_keys={value!r} lists a key twice")
    for key in value:
        if key in ("input_ids", "attention_mask") or key.endswith("_utf8"):
            raise ValueError(
                f"{where}dataset_additional_keys: {key!r} is a name the output reserves; rename it"
            )
    return tuple(value)


def _parse_map_keys(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # Ascend YAMLs sometimes quote the mapping as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}map_keys={value!r} is a string but not a JSON object"
            ) from exc
    if not isinstance(value, dict):
        raise ValueError(f'{where}map_keys must be a mapping like {{"prompt": "problem"}}')
    return {str(k): ("" if v is None else v) for k, v in value.items()}
