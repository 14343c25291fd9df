"""Loading a Hugging Face tokenizer, and the one text <-> ids convention of the data files.

Preprocessing checks that ``decode_text(encode_text(s)) == s`` for every ground truth it writes,
and the training side turns the stored ``labels`` ids back into the ground-truth string with the
same ``decode_text``. Keeping both directions in one module is what makes that check meaningful:
a different ``skip_special_tokens`` or ``clean_up_tokenization_spaces`` on either side would change
the string the verifier compares against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The tokenizer types the dataset YAML may name; the Ascend suite writes HuggingFaceTokenizer.
SUPPORTED_TOKENIZER_TYPES = ("HuggingFaceTokenizer",)


def load_tokenizer(name_or_path: str | Path, key: str = "tokenizer_name_or_path") -> Any:
    """Load a Hugging Face fast tokenizer, or raise ``ValueError`` naming ``key`` and the cause.

    Local directories are the normal case (no network is assumed). A fast tokenizer is required:
    its Rust backend is what makes batch encoding fast and ``decode`` byte-exact.
    """
    from transformers import AutoTokenizer

    text = str(name_or_path)
    looks_like_path = text.startswith((".", "/", "~")) or Path(text).is_absolute()
    if looks_like_path and not Path(text).expanduser().is_dir():
        raise ValueError(
            f"{key}={text!r}: no such directory ({Path(text).expanduser().resolve()}); point it at "
            f"the Hugging Face model directory holding tokenizer.json / tokenizer_config.json"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(text, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... here
        raise ValueError(
            f"{key}={str(name_or_path)!r}: cannot load a Hugging Face tokenizer from it "
            f"({type(exc).__name__}: {exc}). Point it at a directory holding tokenizer.json / "
            f"tokenizer_config.json (for example the Hugging Face model directory)."
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{key}={str(name_or_path)!r}: loaded a slow (Python) tokenizer "
            f"{type(tokenizer).__name__}; a fast tokenizer (tokenizer.json) is required"
        )
    return tokenizer


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without BOS/EOS added: templates place special tokens explicitly."""
    return tokenizer.encode(text, add_special_tokens=False)


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Batch form of :func:`encode_text` (one Rust call for the whole list)."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)[
        "input_ids"
    ]


def decode_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The string of ``ids``, special tokens kept and no space clean-up: the inverse of encoding."""
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def decode_texts(tokenizer: Any, batch: Sequence[Sequence[int]]) -> list[str]:
    """Batch form of :func:`decode_text`."""
    if not batch:
        return []
    return tokenizer.batch_decode(
        [list(ids) for ids in batch], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
