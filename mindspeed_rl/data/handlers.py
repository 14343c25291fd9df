"""Dataset handlers: one raw row -> a conversation to template plus its ground-truth string.

A handler is chosen by the dataset YAML's ``handler_name`` from :data:`HANDLERS`, and reads the
columns named by ``map_keys`` (keys: ``prompt``, ``query``, ``response``, ``system``,
``history``; an empty string means "no such column"). Every handler returns either a
:class:`HandledRow` or a :class:`Rejection` with one of :data:`REJECTION_REASONS`; it never
raises on bad data, so one bad row cannot stop a 17k-row run halfway.

Shared semantics (the Ascend suite's alpaca conversion):

- the user turn is ``prompt`` and, when present and non-empty, ``query`` joined by a newline;
- the ground truth is the ``response`` column: a string, or a mapping with a ``ground_truth``
  string (verl's ``reward_model`` convention, used by DAPO-Math-17k);
- ``system`` (optional) becomes the system turn;
- each ``dataset_additional_keys`` entry other than ``labels`` names a string column, kept as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mindspeed_rl.data.templates import Message

# The additional key that carries the ground truth (tokenized) in the Ascend suite's files.
LABELS_KEY = "labels"

MAP_KEY_NAMES = ("prompt", "query", "response", "system", "history")

# reason -> what it means; the preprocessing summary reports counts and first row indices per key.
REJECTION_REASONS: dict[str, str] = {
    "invalid_json": "the line is not a JSON object",
    "missing_prompt": "prompt column missing, null or blank",
    "non_string_prompt": "prompt (or a message's content) is not a string",
    "malformed_messages": "messages are not [system] user (assistant user)* with string roles",
    "missing_ground_truth": "response column missing, null or blank, or no 'ground_truth' in it",
    "non_string_ground_truth": "ground truth is not a string",
    "missing_additional_key": "a dataset_additional_keys column is missing, null or blank",
    "non_string_additional_key": "a dataset_additional_keys column is not a string",
    "empty_after_templating": "the templated prompt tokenizes to zero tokens",
}


@dataclass(frozen=True)
class Rejection:
    """Why a row was not written; ``reason`` is a key of :data:`REJECTION_REASONS`."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class HandledRow:
    """A valid row: the conversation to template and the exact strings to store.

    ``texts`` maps each additional key to its string: ``labels`` -> the ground truth, any other
    key -> that column's value.
    """

    messages: tuple[Message, ...]
    texts: dict[str, str]


class _Reject(Exception):
    """Internal control flow: a field check failed; carries the Rejection to return."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.rejection = Rejection(reason, detail)


class InstructionHandler:
    """Base of the alpaca-style handlers; subclasses set defaults and the prompt parsing.

    Args:
        map_keys: role -> column overrides; keys outside ``MAP_KEY_NAMES`` or not supported by
            this handler raise ``ValueError`` (before any row is read).
        additional_keys: the YAML's ``dataset_additional_keys``.
    """

    DEFAULT_MAP_KEYS: ClassVar[dict[str, str]] = {}
    SUPPORTED_MAP_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"prompt", "query", "response", "system"}
    )

    def __init__(self, map_keys: Mapping[str, str] | None, additional_keys: Sequence[str]) -> None:
        name = type(self).__name__
        merged = dict(self.DEFAULT_MAP_KEYS)
        for key, column in (map_keys or {}).items():
            if key not in MAP_KEY_NAMES:
                raise ValueError(
                    f"map_keys: unknown key {key!r} for {name}; valid keys: "
                    f"{', '.join(MAP_KEY_NAMES)}"
                )
            if column and key not in self.SUPPORTED_MAP_KEYS:
                raise ValueError(
                    f"map_keys.{key}={column!r}: {name} does not read a {key!r} column; supported: "
                    f"{', '.join(sorted(self.SUPPORTED_MAP_KEYS))}"
                )
            if column is not None and not isinstance(column, str):
                raise ValueError(f"map_keys.{key} must be a column name string, got {column!r}")
            merged[key] = column or ""
        for key in ("prompt", "response"):
            if not merged.get(key):
                raise ValueError(f"map_keys.{key} must name a column for {name}")
        self.columns = {key: merged.get(key, "") for key in MAP_KEY_NAMES}
        self.additional_keys = tuple(additional_keys)

    def required_columns(self) -> list[str]:
        """Columns that must exist in the input file (checked before any work starts)."""
        mapped = [column for column in self.columns.values() if column]
        return mapped + [key for key in self.additional_keys if key != LABELS_KEY]

    def __call__(self, row: Mapping[str, Any]) -> HandledRow | Rejection:
        try:
            messages = self.parse_messages(row)
            texts = {}
            for key in self.additional_keys:
                if key == LABELS_KEY:
                    texts[key] = self._ground_truth(row)
                else:
                    texts[key] = self._additional(row, key)
        except _Reject as rejected:
            return rejected.rejection
        return HandledRow(messages=tuple(messages), texts=texts)

    def parse_messages(self, row: Mapping[str, Any]) -> list[Message]:
        """System turn (if any), history turns (if any), then the user turn."""
        messages = self._system_turn(row)
        messages += self._history_turns(row)
        messages.append(Message("user", self._user_content(row)))
        return messages

    def _user_content(self, row: Mapping[str, Any]) -> str:
        prompt = row.get(self.columns["prompt"])
        if not isinstance(prompt, str) and prompt is not None:
            raise _Reject("non_string_prompt", f"{self.columns['prompt']}: {type(prompt).__name__}")
        parts = [prompt] if prompt and prompt.strip() else []
        if self.columns["query"]:
            query = row.get(self.columns["query"])
            if query is not None and not isinstance(query, str):
                raise _Reject(
                    "non_string_prompt", f"{self.columns['query']}: {type(query).__name__}"
                )
            if query and query.strip():
                parts.append(query)
        if not parts:
            raise _Reject("missing_prompt", self.columns["prompt"])
        return "\n".join(parts)

    def _system_turn(self, row: Mapping[str, Any]) -> list[Message]:
        if not self.columns["system"]:
            return []
        system = row.get(self.columns["system"])
        if system is None or (isinstance(system, str) and not system.strip()):
            return []
        if not isinstance(system, str):
            raise _Reject("non_string_prompt", f"{self.columns['system']}: {type(system).__name__}")
        return [Message("system", system)]

    def _history_turns(self, row: Mapping[str, Any]) -> list[Message]:
        return []

    def _ground_truth(self, row: Mapping[str, Any]) -> str:
        column = self.columns["response"]
        value = row.get(column)
        if isinstance(value, Mapping):
            value = value.get("ground_truth")
            column = f"{column}.ground_truth"
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _Reject("missing_ground_truth", column)
        if not isinstance(value, str):
            raise _Reject("non_string_ground_truth", f"{column}: {type(value).__name__}")
        return value

    def _additional(self, row: Mapping[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _Reject("missing_additional_key", key)
        if not isinstance(value, str):
            raise _Reject("non_string_additional_key", f"{key}: {type(value).__name__}")
        return value


class R1AlpacaStyleInstructionHandler(InstructionHandler):
    """Single-turn problem / answer rows (DeepScaleR, ORZ): ``{"problem": ..., "answer": ...}``."""

    DEFAULT_MAP_KEYS: ClassVar[dict[str, str]] = {"prompt": "problem", "response": "answer"}


class AlpacaStyleInstructionHandler(InstructionHandler):
    """Alpaca rows ``{instruction, input, output, system?, history?}`` as RL prompts.

    ``output`` is the ground truth; ``history`` is a list of ``[user, assistant]`` pairs that
    precede the instruction. Unlike the Ascend suite's handler of this name (which writes SFT
    samples: prompt + response with masked labels), this one writes prompt data for RL.
    """

    DEFAULT_MAP_KEYS: ClassVar[dict[str, str]] = {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
    }
    SUPPORTED_MAP_KEYS: ClassVar[frozenset[str]] = frozenset(MAP_KEY_NAMES)

    def _history_turns(self, row: Mapping[str, Any]) -> list[Message]:
        if not self.columns["history"]:
            return []
        history = row.get(self.columns["history"])
        if history is None:
            return []
        if not isinstance(history, list):
            raise _Reject("malformed_messages", f"{self.columns['history']} is not a list")
        turns: list[Message] = []
        for pair in history:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise _Reject("malformed_messages", "history item is not a [user, assistant] pair")
            for role, content in zip(("user", "assistant"), pair):
                if not isinstance(content, str):
                    raise _Reject("non_string_prompt", f"history {role}: {type(content).__name__}")
                turns.append(Message(role, content))
        return turns


class Math17kAlpacaStyleInstructionHandler(InstructionHandler):
    """DAPO-Math-17k rows (verl format), e.g.::

        {"data_source": "math_dapo", "ability": "MATH",
         "prompt": [{"role": "user", "content": "Solve ... Answer: $Answer ..."}],
         "reward_model": {"style": "rule", "ground_truth": "34"}, "extra_info": {"index": 0}}

    ``prompt`` is a list of ``{role, content}`` messages ([system] user (assistant user)*) or a
    plain string; the ground truth is ``reward_model.ground_truth``.
    """

    DEFAULT_MAP_KEYS: ClassVar[dict[str, str]] = {"prompt": "prompt", "response": "reward_model"}

    def parse_messages(self, row: Mapping[str, Any]) -> list[Message]:
        column = self.columns["prompt"]
        value = row.get(column)
        if not isinstance(value, list):
            return super().parse_messages(row)
        if not value:
            raise _Reject("missing_prompt", f"{column} is an empty list")
        messages = self._system_turn(row)
        for position, item in enumerate(value):
            if not isinstance(item, Mapping) or not isinstance(item.get("role"), str):
                raise _Reject("malformed_messages", f"{column}[{position}] has no string 'role'")
            content = item.get("content")
            if content is None or (isinstance(content, str) and not content.strip()):
                raise _Reject("missing_prompt", f"{column}[{position}].content")
            if not isinstance(content, str):
                raise _Reject("non_string_prompt", f"{column}[{position}].content")
            messages.append(Message(item["role"], content))
        _check_turn_order(messages, column)
        if self.columns["query"]:  # an extra column appended to the last user turn
            query = row.get(self.columns["query"])
            if query is not None and not isinstance(query, str):
                raise _Reject(
                    "non_string_prompt", f"{self.columns['query']}: {type(query).__name__}"
                )
            if query and query.strip():
                messages[-1] = Message("user", f"{messages[-1].content}\n{query}")
        return messages


def _check_turn_order(messages: Sequence[Message], column: str) -> None:
    turns = messages[1:] if messages and messages[0].role == "system" else messages
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    roles = [m.role for m in turns]
    if roles != expected or not roles or roles[-1] != "user":
        raise _Reject("malformed_messages", f"{column} roles {roles}")


# handler_name -> class. The names are those of the Ascend suite's YAMLs.
HANDLERS: dict[str, type[InstructionHandler]] = {
    "Math17kAlpacaStyleInstructionHandler": Math17kAlpacaStyleInstructionHandler,
    "R1AlpacaStyleInstructionHandler": R1AlpacaStyleInstructionHandler,
    "AlpacaStyleInstructionHandler": AlpacaStyleInstructionHandler,
}


def build_handler(
    handler_name: str, map_keys: Mapping[str, str] | None, additional_keys: Sequence[str]
) -> InstructionHandler:
    """The handler named ``handler_name``; ``ValueError`` listing valid names otherwise."""
    if handler_name not in HANDLERS:
        raise ValueError(
            f"handler_name={handler_name!r} is not a known handler; valid: {', '.join(HANDLERS)}"
        )
    return HANDLERS[handler_name](map_keys, additional_keys)
