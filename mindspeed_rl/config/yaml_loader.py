"""Read YAML scalars as OmegaConf (and so Hydra, the Ascend suite's loader) reads them.

PyYAML implements YAML 1.1, where a float needs a dot: ``lr: 5e-5`` or ``norm_epsilon: 1e-06``
would load as strings and fail validation, although the same file works with the Ascend suite.
OmegaConf replaces PyYAML's float rule with a YAML 1.2-style one (exponent without a dot, ``1_000.5``,
``5.e3``) and drops the timestamp rule (``2024-01-01`` stays a string); this loader does the same,
so a file means the same thing here and there. ``tests/config/test_yaml_loader.py`` compares the
two on a list of spellings, so a change in OmegaConf shows up as a failing test.
"""

from __future__ import annotations

import re
from typing import IO, Any

import yaml

_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

# OmegaConf 2.x's rule (omegaconf/_yaml.py, get_yaml_loader), verbatim.
_FLOAT = re.compile(
    r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with OmegaConf's float and timestamp rules."""


# Copy the inherited table before editing it: SafeLoader's own must stay as it is.
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in rules if tag not in (_FLOAT_TAG, _TIMESTAMP_TAG)]
    for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def load_yaml(stream: str | bytes | IO[Any]) -> Any:
    """``yaml.safe_load`` with OmegaConf's scalar rules."""
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506  (a SafeLoader subclass)


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML: {where}{problem}"
