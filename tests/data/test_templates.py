"""Prompt templates render the exact text of each model family (expected strings by hand)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mindspeed_rl.data.templates import (
    CHAT_TEMPLATE,
    DEFAULT_TEMPLATES_PATH,
    Message,
    available_templates,
    load_prompt_formatter,
)

USER = [Message("user", "What is 1+1?")]
MULTI = [
    Message("system", "Be brief."),
    Message("user", "A"),
    Message("assistant", "B"),
    Message("user", "C"),
]


def render(name: str, tokenizer, messages) -> str:
    return load_prompt_formatter(name, tokenizer).render(messages)


def test_shipped_templates_include_the_required_names() -> None:
    names = available_templates()
    for name in ("empty", "qwen", "qwen3", "llama3", "chatml", CHAT_TEMPLATE):
        assert name in names


def test_empty_is_the_content_itself(tokenizer) -> None:
    assert render("empty", tokenizer, USER) == "What is 1+1?"


def test_qwen_adds_its_default_system(tokenizer) -> None:
    assert render("qwen", tokenizer, USER) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen3_and_chatml_have_no_default_system(tokenizer) -> None:
    expected = "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    assert render("qwen3", tokenizer, USER) == expected
    assert render("chatml", tokenizer, USER) == expected


@pytest.mark.parametrize("name", ["qwen", "chatml"])
def test_multi_turn_with_system(tokenizer, name: str) -> None:
    # qwen: assistant = content + EOS replaced by <|im_end|>, then separator "\n" before the user.
    assert render(name, tokenizer, MULTI) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n"
        "B<|im_end|>\n"
        "<|im_start|>user\nC<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3_starts_with_the_tokenizers_bos(tokenizer) -> None:
    with_bos = copy.deepcopy(tokenizer)
    with_bos.bos_token = "<|endoftext|>"
    assert render("llama3", with_bos, USER) == (
        "<|endoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 1+1?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_without_bos_token_is_a_clear_error(tokenizer) -> None:
    with pytest.raises(ValueError, match="bos_token"):
        load_prompt_formatter("llama3", tokenizer)


def test_llama2_puts_the_system_block_inside_the_first_instruction(tokenizer) -> None:
    with_bos = copy.deepcopy(tokenizer)
    with_bos.bos_token = "<s>"
    assert render("llama2", with_bos, [Message("system", "S"), Message("user", "U")]) == (
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]"
    )


def test_chat_template_matches_qwen_template_for_a_qwen_style_tokenizer(tokenizer) -> None:
    assert render(CHAT_TEMPLATE, tokenizer, USER) == render("qwen", tokenizer, USER)


def test_unknown_template_lists_the_valid_names(tokenizer) -> None:
    with pytest.raises(ValueError, match=r"prompt_type='qwen9'.*valid: .*qwen3.*chat_template"):
        load_prompt_formatter("qwen9", tokenizer)


def test_chat_template_needs_one(tokenizer) -> None:
    without = copy.deepcopy(tokenizer)
    without.chat_template = None
    with pytest.raises(ValueError, match="has no chat_template"):
        load_prompt_formatter(CHAT_TEMPLATE, without)


def test_custom_template_file_and_content_placeholder_in_user_text(
    tokenizer, tmp_path: Path
) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps([{"name": "mine", "format_user": {"slots": ["Q: {{content}}\nA:"]}}])
    )
    formatter = load_prompt_formatter("mine", tokenizer, path)
    assert formatter.render([Message("user", "say {{content}}")]) == "Q: say {{content}}\nA:"
    assert json.loads(DEFAULT_TEMPLATES_PATH.read_text())  # the shipped file is valid JSON
