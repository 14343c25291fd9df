"""A tiny, locally built Hugging Face fast tokenizer for tests and the quickstart.

Tests and the CPU quickstart must never need a model hub, yet they should exercise the same code
paths as a real Qwen tokenizer: ``AutoTokenizer.from_pretrained(dir)``, special tokens, a chat
template, ``encode`` / ``decode``. This module trains a byte-level BPE (the scheme of GPT-2 and
Qwen) on a handful of texts with the ``tokenizers`` library and saves it with ``save_pretrained``.

Properties the rest of the project relies on:

- any string encodes (the 256 byte symbols are always in the vocabulary), and
  ``decode(encode(s)) == s`` for every NFC-normalized ``s``. Like Qwen's tokenizer, it applies NFC
  normalization, so a decomposed string such as ``"e\\u0301"`` comes back composed: a real case of
  a tokenizer that cannot round-trip its input;
- special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos) are single ids,
  ``0, 1, 2`` in that order;
- the chat template is Qwen2-Instruct's shape: a default system turn
  ``You are a helpful assistant.`` when the conversation has none, then
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message and ``<|im_start|>assistant\\n`` as
  the generation prompt. It renders the same text as the ``qwen`` entry of
  ``configs/model/templates.json``.

Usage::

    from mindspeed_rl.data.toy_tokenizer import build_toy_tokenizer
    path = build_toy_tokenizer(tmp_path / "tok")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

QWEN_STYLE_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Enough text for the BPE trainer to learn merges for English, digits and LaTeX-style math, so
# token counts stay in the range of a real tokenizer's (a few characters per token).
DEFAULT_CORPUS = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.",
    "Remember to put your answer on its own line after 'Answer:'.",
    "Let $x$ and $y$ be real numbers such that $x + y = 10$ and $x - y = 2$. Find $x \\cdot y$.",
    "In triangle $ABC$, $AB = 13$, $BC = 14$ and $CA = 15$. What is the area of the triangle?",
    "The sum of the first $n$ positive integers is $\\frac{n(n+1)}{2}$. Compute the sum for "
    "n = 100. The answer is 5050.",
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.",
    "You are a helpful assistant. Please reason step by step, and put your final answer within "
    "\\boxed{}.",
    "What is the probability that a fair coin lands heads three times in a row? 1/8",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000 2024 3.14159 -1 \\sqrt{2}",
)


def build_toy_tokenizer(
    save_dir: str | Path,
    texts: Iterable[str] | None = None,
    vocab_size: int = 1024,
) -> Path:
    """Train a byte-level BPE tokenizer on ``texts`` and save it as a Hugging Face tokenizer.

    Args:
        save_dir: directory to write ``tokenizer.json``, ``tokenizer_config.json`` and the chat
            template into (created if missing).
        texts: training texts; defaults to a small built-in English + math corpus. Merges are
            learned from these texts only, so tokenizing similar text gives realistic lengths.
        vocab_size: upper bound on the vocabulary (256 byte symbols + 3 special tokens + merges);
            a small corpus may learn fewer merges than allowed.

    Returns:
        ``save_dir`` as a ``Path``, loadable with ``AutoTokenizer.from_pretrained``.

    Deterministic: the same texts and vocab_size give byte-identical files.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the 256 byte symbols and "
            f"{len(SPECIAL_TOKENS)} special tokens; use at least {256 + len(SPECIAL_TOKENS)}"
        )
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts) if texts is not None else list(DEFAULT_CORPUS), trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN_STYLE_CHAT_TEMPLATE
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(save_dir))
    # transformers 5 writes its own class name (TokenizersBackend), unknown to transformers 4;
    # PreTrainedTokenizerFast loads as the same backend in both.
    config_path = save_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return save_dir
