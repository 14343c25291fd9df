"""Warnings every run prints although nothing is wrong: hidden here, in one place, and said once.

megatron-core warns at import and model build, in every process, that Transformer Engine and
Apex are missing and that it falls back to torch (always so on CPU; the Ascend path uses
MindSpeed instead), and its own default ``cuda_graph_scope="full"`` trips its own deprecation
warning. Ray warns on every local start that token authentication is enabled (its new default,
which is what a shared machine wants). Each filter matches one exact message, category and
emitting module; every other warning, including other messages from the same modules, still
shows. ``fallback_note`` is the one INFO line the driver logs instead.

Installed by ``mindspeed_rl/__init__.py``, so that every process of a run (the driver, Ray
workers, preprocessing and conversion) has it before megatron-core is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import warnings

# (exact message start, category, emitting module): regexes anchored at the start
MEGATRON_FALLBACKS = (
    (
        "Transformer Engine and Apex are not installed. Falling back to ",
        UserWarning,
        r"megatron\.core\.",
    ),
    ("Apex is not installed. Falling back to Torch Norm", UserWarning, r"megatron\.core\.models\."),
    (
        "full scope is deprecated. Use empty cuda_graph_scope to capture the whole layer.",
        UserWarning,
        r"megatron\.core\.transformer\.transformer_config",
    ),
)
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_AUTH_ENABLED = "Token authentication is enabled for this Ray cluster."


class _DropRayAuthBanner(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING and str(record.msg).startswith(RAY_AUTH_ENABLED)
        )


def install() -> None:
    """Add the filters (idempotent: ``warnings`` and ``logging`` drop exact duplicates)."""
    for message, category, module in MEGATRON_FALLBACKS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category,
                                module=module)  # fmt: skip
    auth = logging.getLogger(RAY_AUTH_LOGGER)
    if not any(isinstance(f, _DropRayAuthBanner) for f in auth.filters):
        auth.addFilter(_DropRayAuthBanner())


def fallback_note() -> str | None:
    """The one line that replaces the hidden fallback warnings; None when nothing falls back."""
    missing = [n for n in ("transformer_engine", "apex") if importlib.util.find_spec(n) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not installed: megatron-core uses its torch fallbacks "
        "(optimizers, norms, multi-tensor kernels), as expected on CPU"
    )
