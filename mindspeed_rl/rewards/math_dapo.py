"""``acc_for_dapo``: the DAPO math verifier (Minerva-style answer normalization).

Semantics are those of the DAPO recipe (verl ``math_dapo.compute_score``, also shipped by the Ascend
suite): read the last 300 characters of the response, take the text after the last ``Answer:``
(pattern ``(?i)Answer\\s*:\\s*([^\\n]+)``), normalize it and the ground truth the same way (units,
dollars, ``\\text{}``, ``\\boxed{}``, spaces, thousands separators, ...) and compare as strings.
Correct scores 1.0, anything else -1.0.

The reference normalization uses regexes such as ``(.*?)(\\$)(.*?)(\\$)(.*)`` that backtrack
quadratically on a long line; here those steps are single forward scans with the same result
(tests/rewards/test_math_dapo.py checks equality against the reference regexes on random
strings), so the work is linear in the input: at most 300 characters of model text, plus the
ground truth, which is normalized once per distinct value.
"""

from __future__ import annotations

import functools
import re

from mindspeed_rl.rewards.verifier import VerifierResult

# The longest answer in MATH-500 has 159 characters; DAPO looks at twice that much.
RESPONSE_TAIL_CHARS = 300
CORRECT_SCORE = 1.0
INCORRECT_SCORE = -1.0
ANSWER_PATTERN = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
INVALID_PRED = "[INVALID]"

# Applied in order, as in the reference implementation (including its quirks: "an " and "a " are
# removed anywhere, which is what the published DAPO numbers were measured with).
SUBSTITUTIONS = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)
REMOVED_EXPRESSIONS = (
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    '"',
    "\\dots",
)
_FRAC_SHORTHAND = re.compile(r"(frac)([^{])(.)")  # \fracab -> \frac{a}{b}
_SQRT_SHORTHAND = re.compile(r"(sqrt)([^{])")  # \sqrta -> \sqrt{a}


def _keep_first_dollar_pair(text: str) -> str:
    """Reference: ``re.sub(r"(.*?)(\\$)(.*?)(\\$)(.*)", "$\\3$", text)``.

    ``.`` does not cross newlines, so per line: a line with two or more ``$`` becomes the text
    between its first two, wrapped in ``$``; other lines stay as they are.
    """
    if "$" not in text:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        first = line.find("$")
        if first < 0:
            continue
        second = line.find("$", first + 1)
        if second >= 0:
            lines[i] = "$" + line[first + 1 : second] + "$"
    return "\n".join(lines)


def _unwrap_to_first_brace(text: str, opener: str) -> str:
    """Reference: ``re.sub(r"(OPENER)(.*?)(\\})", "\\2", text)`` for a literal OPENER ending in ``{``.

    Each opener whose closing ``}`` (the first one after it) lies on the same line is replaced by
    the text in between. The positions of the next ``}`` and newline are cached as the scan moves
    forward, which keeps the whole pass linear where the regex is quadratic on many openers.
    """
    if opener not in text:
        return text
    n = len(text)
    out: list[str] = []
    copied_up_to = 0
    search_from = 0
    next_close = -1  # first "}" at or after the last start looked at (n: none)
    next_newline = -1
    while True:
        start = text.find(opener, search_from)
        if start < 0:
            break
        body = start + len(opener)
        if next_close < body:
            found = text.find("}", body)
            next_close = n if found < 0 else found
        if next_newline < body:
            found = text.find("\n", body)
            next_newline = n if found < 0 else found
        if next_close < n and next_close < next_newline:
            out.append(text[copied_up_to:start])
            out.append(text[body:next_close])
            copied_up_to = search_from = next_close + 1
        else:
            search_from = start + 1
    out.append(text[copied_up_to:])
    return "".join(out)


def _unwrap_to_last_brace(text: str, opener: str) -> str:
    """Reference: ``re.sub(r"(OPENER)(.*)(\\})", "\\2", text)``: greedy, up to the last ``}`` of the line."""
    if opener not in text:
        return text
    n = len(text)
    out: list[str] = []
    copied_up_to = 0
    search_from = 0
    while True:
        start = text.find(opener, search_from)
        if start < 0:
            break
        body = start + len(opener)
        line_end = text.find("\n", body)
        if line_end < 0:
            line_end = n
        close = text.rfind("}", body, line_end)
        if close >= 0:
            out.append(text[copied_up_to:start])
            out.append(text[body:close])
            copied_up_to = search_from = close + 1
        else:
            # No "}" after this opener on its line, so none after any later opener on it either.
            search_from = line_end
    out.append(text[copied_up_to:])
    return "".join(out)


def normalize_final_answer(final_answer: str) -> str:
    """Normalize an answer for string comparison (Minerva / DAPO rules), in linear time."""
    final_answer = final_answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        final_answer = final_answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        final_answer = final_answer.replace(expr, "")
    final_answer = _keep_first_dollar_pair(final_answer)
    final_answer = _unwrap_to_first_brace(final_answer, "\\text{")
    final_answer = _unwrap_to_first_brace(final_answer, "\\textbf{")
    final_answer = _unwrap_to_first_brace(final_answer, "\\overline{")
    final_answer = _unwrap_to_last_brace(final_answer, "\\boxed{")
    final_answer = _FRAC_SHORTHAND.sub("frac{\\2}{\\3}", final_answer)
    final_answer = _SQRT_SHORTHAND.sub("sqrt{\\2}", final_answer)
    final_answer = final_answer.replace("$", "")
    if final_answer.replace(",", "").isdigit():
        final_answer = final_answer.replace(",", "")
    return final_answer.strip()


# The n samples of a prompt share one ground truth: normalize each distinct value once.
_normalize_ground_truth = functools.lru_cache(maxsize=8192)(normalize_final_answer)


def extract_answer(response: str) -> str | None:
    """The raw text after the last ``Answer:`` in the last 300 characters, or None."""
    matches = ANSWER_PATTERN.findall(response[-RESPONSE_TAIL_CHARS:])
    return matches[-1] if matches else None


def acc_for_dapo(response: str, ground_truth: str) -> VerifierResult:
    """DAPO math accuracy: 1.0 when the normalized last ``Answer:`` equals the ground truth, else -1.0.

    A response without an ``Answer:`` line is wrong (pred ``[INVALID]``), whatever the ground truth.
    """
    extracted = extract_answer(response)
    if extracted is None:
        return VerifierResult(INCORRECT_SCORE, False, INVALID_PRED)
    pred = normalize_final_answer(extracted)
    correct = pred == _normalize_ground_truth(ground_truth)
    return VerifierResult(CORRECT_SCORE if correct else INCORRECT_SCORE, correct, pred)
