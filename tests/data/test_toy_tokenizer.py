"""The toy tokenizer behaves like a real byte-level BPE tokenizer (Qwen-style)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mindspeed_rl.data.tokenization import decode_text, encode_text
from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer


def test_special_tokens_are_single_ids_in_fixed_order(tokenizer) -> None:
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        0,
        1,
        2,
    ]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id == 0
    assert encode_text(tokenizer, "<|im_start|>user\n")[0] == 1


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii",
        "数学 😀 ünïcode",
        "  spaces  \t\r\n",
        "\x00\x7f control",
        "<|im_end|>x",
        "$\\frac{1}{2}$",
    ],
)
def test_any_nfc_string_round_trips(tokenizer, text: str) -> None:
    ids = encode_text(tokenizer, text)
    assert ids and decode_text(tokenizer, ids) == text


def test_nfd_string_does_not_round_trip_like_qwen(tokenizer) -> None:
    decomposed = "cafe\u0301"
    assert decode_text(tokenizer, encode_text(tokenizer, decomposed)) == "caf\u00e9"


def test_chat_template_is_qwen_shaped(tokenizer) -> None:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_build_is_deterministic_and_merges_are_learned(tmp_path: Path) -> None:
    first = build_toy_tokenizer(tmp_path / "a", ["hello world"] * 5, vocab_size=300)
    second = build_toy_tokenizer(tmp_path / "b", ["hello world"] * 5, vocab_size=300)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(first)
    assert len(encode_text(tok, "hello world")) < len("hello world")  # merges, not bytes


def test_too_small_vocab_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size=100"):
        build_toy_tokenizer(tmp_path, vocab_size=100)
