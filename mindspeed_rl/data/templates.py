"""Prompt templates: turn a conversation into the prompt text the model is trained to continue.

Two kinds, chosen by the dataset YAML's ``prompt_type``:

- a named entry of ``configs/model/templates.json`` (``empty``, ``qwen``, ``qwen3``, ``llama3``,
  ``chatml``, ...). The file uses the LLaMA-Factory / Ascend-suite format, so template files of
  that suite load here unchanged. Each ``format_*`` entry is a list of *slots*: a string in which
  ``{{content}}`` is replaced by the message text, ``["bos_token"]`` / ``["eos_token"]`` for the
  tokenizer's own BOS / EOS, or ``{"token": "<x>"}`` for a named token;
- ``chat_template``: the tokenizer's own Jinja chat template (``tokenizer.apply_chat_template``
  with ``add_generation_prompt=True``), what vLLM's chat endpoint would render.

Rendering a named template (turn 0 gets the prefix and the system turn, later user turns a
separator, as in the Ascend suite)::

    prefix + system(system or default_system) + user(u0) + assistant(a0) + sep + user(u1) ...

ending with the last user turn, whose slot ends with the generation prompt (e.g.
``<|im_start|>assistant\\n``). The whole prompt is rendered to text and tokenized in one call, so
a row's ``input_ids`` are exactly ``tokenizer.encode(render(messages), add_special_tokens=False)``.
(The Ascend suite encodes each slot separately; the two agree whenever slot boundaries fall on
special tokens or newlines, as in every template shipped here.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

# Default location of the template file, relative to the repository root.
DEFAULT_TEMPLATES_PATH = (
    Path(__file__).resolve().parents[2] / "configs" / "model" / "templates.json"
)

# prompt_type value that selects the tokenizer's own chat template instead of templates.json.
CHAT_TEMPLATE = "chat_template"

Role = Literal["system", "user", "assistant"]
_CONTENT = "{{content}}"
# Keys of a templates.json entry that only matter for SFT / tool use; prompts ignore them.
_IGNORED_TEMPLATE_KEYS = frozenset(
    {
        "format_function",
        "format_observation",
        "format_tools",
        "efficient_eos",
        "force_system",
        "template_class",
    }
)
_SLOT_KEYS = (
    "format_user",
    "format_assistant",
    "format_system",
    "format_separator",
    "format_prefix",
)
_KNOWN_TEMPLATE_KEYS = frozenset(
    {"name", "default_system", "stop_words", "replace_eos", "system_in_user", *_SLOT_KEYS}
    | _IGNORED_TEMPLATE_KEYS
)


@dataclass(frozen=True)
class Message:
    """One turn of a conversation; ``content`` is already a non-empty string."""

    role: Role
    content: str


class PromptFormatter(Protocol):
    """Renders a conversation (optional leading system turn, ending with a user turn) to text."""

    name: str

    def render(self, messages: Sequence[Message]) -> str: ...


@dataclass(frozen=True)
class SlotTemplate:
    """A templates.json entry with its token slots resolved against one tokenizer.

    Each ``format_*`` field is a list of strings in which only ``{{content}}`` remains to fill.
    """

    name: str
    prefix: tuple[str, ...]
    system: tuple[str, ...]
    user: tuple[str, ...]
    assistant: tuple[str, ...]
    separator: tuple[str, ...]
    default_system: str
    system_in_user: bool

    def render(self, messages: Sequence[Message]) -> str:
        system, turns = _split_system(messages)
        system = system or self.default_system
        parts: list[str] = list(self.prefix)
        pending_system = ""
        if system:
            if self.system_in_user:  # llama2: <<SYS>> block inside the first [INST]
                pending_system = _fill(self.system, system)
            else:
                parts.append(_fill(self.system, system))
        for i, message in enumerate(turns):
            if message.role == "user":
                if i > 0:
                    parts.extend(self.separator)
                parts.append(_fill(self.user, pending_system + message.content))
                pending_system = ""
            else:
                parts.append(_fill(self.assistant, message.content))
        return "".join(parts)


@dataclass(frozen=True)
class ChatTemplateFormatter:
    """The tokenizer's own chat template, with the generation prompt appended."""

    tokenizer: Any
    name: str = CHAT_TEMPLATE

    def render(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )


def available_templates(templates_path: str | Path = DEFAULT_TEMPLATES_PATH) -> list[str]:
    """Names accepted as ``prompt_type``: the file's entries plus ``chat_template``."""
    return [entry["name"] for entry in _read_entries(Path(templates_path))] + [CHAT_TEMPLATE]


def load_prompt_formatter(
    prompt_type: str, tokenizer: Any, templates_path: str | Path = DEFAULT_TEMPLATES_PATH
) -> PromptFormatter:
    """The formatter named ``prompt_type``, bound to ``tokenizer``.

    Raises ``ValueError`` naming the key and the valid choices when the name is unknown, when the
    template needs a BOS/EOS token the tokenizer lacks, or when ``chat_template`` is asked of a
    tokenizer that has none.
    """
    templates_path = Path(templates_path)
    if prompt_type == CHAT_TEMPLATE:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"prompt_type={CHAT_TEMPLATE!r}: the tokenizer has no chat_template; pick a named "
                f"template instead: {', '.join(available_templates(templates_path)[:-1])}"
            )
        return ChatTemplateFormatter(tokenizer)
    entries = {entry["name"]: entry for entry in _read_entries(templates_path)}
    if prompt_type not in entries:
        raise ValueError(
            f"prompt_type={prompt_type!r} is not a template in {templates_path}; valid: "
            f"{', '.join(available_templates(templates_path))}"
        )
    return _bind(entries[prompt_type], tokenizer, templates_path)


def _read_entries(templates_path: Path) -> list[dict[str, Any]]:
    if not templates_path.is_file():
        raise ValueError(
            f"prompt_type_path={str(templates_path)!r} does not exist; it should be a JSON list of "
            f"templates such as configs/model/templates.json"
        )
    try:
        entries = json.loads(templates_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"prompt_type_path={str(templates_path)!r} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
    ):
        raise ValueError(
            f"prompt_type_path={str(templates_path)!r} must hold a JSON list of objects, each with "
            f"a string 'name'"
        )
    return entries


def _bind(entry: dict[str, Any], tokenizer: Any, templates_path: Path) -> SlotTemplate:
    name = entry["name"]
    where = f"template {name!r} in {templates_path}"
    unknown = sorted(set(entry) - _KNOWN_TEMPLATE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(_KNOWN_TEMPLATE_KEYS)}")
    stop_words = entry.get("stop_words") or []
    # replace_eos: the template's own end-of-turn word stands in for the tokenizer's EOS.
    eos_text = stop_words[0] if entry.get("replace_eos") and stop_words else None

    def slots(key: str, default: list[Any]) -> tuple[str, ...]:
        spec = entry.get(key)
        if spec is not None and not (
            isinstance(spec, dict) and isinstance(spec.get("slots"), list)
        ):
            raise ValueError(f"{where}: {key} must be an object with a 'slots' list, got {spec!r}")
        raw = default if spec is None else spec["slots"]
        return tuple(_resolve_slot(slot, tokenizer, eos_text, f"{where}, {key}") for slot in raw)

    return SlotTemplate(
        name=name,
        prefix=slots("format_prefix", []),
        system=slots("format_system", [_CONTENT]),
        user=slots("format_user", [_CONTENT]),
        assistant=slots("format_assistant", [_CONTENT, ["eos_token"]]),
        separator=slots("format_separator", []),
        default_system=str(entry.get("default_system", "")),
        system_in_user=bool(entry.get("system_in_user", False)),
    )


def _resolve_slot(slot: Any, tokenizer: Any, eos_text: str | None, where: str) -> str:
    if isinstance(slot, str):
        return slot
    if isinstance(slot, dict) and isinstance(slot.get("token"), str):
        return slot["token"]
    if isinstance(slot, list) and len(slot) == 1 and slot[0] in ("bos_token", "eos_token"):
        if slot[0] == "eos_token" and eos_text is not None:
            return eos_text
        text = getattr(tokenizer, slot[0], None)
        if not text:
            raise ValueError(
                f"{where}: needs the tokenizer's {slot[0]}, but this tokenizer has none; choose a "
                f"template without it (for example 'chat_template' or 'empty')"
            )
        return text
    raise ValueError(
        f'{where}: slot {slot!r} is not a string, ["bos_token"], ["eos_token"] or '
        f'{{"token": "..."}}'
    )


def _fill(slots: tuple[str, ...], content: str) -> str:
    return "".join(slot.replace(_CONTENT, content) for slot in slots)


def _split_system(messages: Sequence[Message]) -> tuple[str, Sequence[Message]]:
    if messages and messages[0].role == "system":
        return messages[0].content, messages[1:]
    return "", messages
