"""Is a math answer equal to the ground truth? The grading rule of PRM800K (Lightman et al. 2023,
"Let's Verify Step by Step"), which the Ascend suite's ``math_17k_acc`` and ``base_acc`` use
through the ``mathruler`` package (0.1.0, ``mathruler/grader.py``).

Two answers are equal when

1. after the MATH normalization (Hendrycks et al. 2021: ``\\text{}`` wrapper, ``\\left``,
   ``\\right``, ``\\dfrac``, degrees, dollars, percent, units after ``\\text{ ``, leading
   ``k =``, ``\\sqrt3``, ``\\frac12``, ``a/b``, ``0.5``) the strings are equal, or
2. after the PRM800K normalization (units, words like ``million``, LaTeX rendered as text by
   pylatexenc, spaces and braces dropped, lower case, ``1,000`` -> ``1000``) the strings are
   equal, or
3. element by element (tuples and intervals keep their brackets), sympy simplifies the
   difference to 0 -- except that integers must match exactly and fractions ``a/b`` as written
   (an unreduced fraction is not the reduced one).

Model text reaches sympy's parser, which ``eval``s what it builds. PRM800K already refuses more
than two unknown letters and stacked or multi-digit exponents; here the text must also consist
only of digits, ASCII letters, spaces and ``+-*/^().,`` and may not hold ``**`` (an exponent that
the ``^`` rules would not see). Text outside that set is graded by rules 1-2 only. The scorer's
``verifier_timeout`` bounds what is left (``sympy.simplify`` on a large expression).
"""

from __future__ import annotations

import re

_TEXT_WRAPPER = re.compile(r"^\\text\{(?P<text>.+?)\}$")


# --- rule 1: the MATH normalization ----------------------------------------------------------


class _GiveUp(Exception):
    """A malformed answer on which the MATH normalization stops: the answer stays as it is."""


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``."""
    head, *rest = s.split("\\frac")
    out = [head]
    for part in rest:
        if not part:
            raise _GiveUp
        if part[0] == "{":
            out.append("\\frac" + part)
        elif len(part) < 2:
            return s
        elif part[1] == "{":
            out.append("\\frac{" + part[0] + "}" + part[1:])
        else:
            out.append("\\frac{" + part[0] + "}{" + part[1] + "}" + part[2:])
    return "".join(out)


def _fix_a_slash_b(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when both sides are plain integers written canonically."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _fix_sqrt(s: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}``."""
    head, *rest = s.split("\\sqrt")
    out = [head]
    for part in rest:
        if not part:
            raise _GiveUp
        out.append("\\sqrt" + part if part[0] == "{" else "\\sqrt{" + part[0] + "}" + part[1:])
    return "".join(out)


def _math_strip(s: str) -> str:
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"),
                     ("dfrac", "frac"), ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""),
                     ("^\\circ", ""), ("\\$", "")):  # fmt: skip
        s = s.replace(old, new)
    if "\\text{ " in s:  # a unit on the right ("5 \\text{ cm}")
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise _GiveUp
        s = pieces[0]
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 3" -> "3"
        s = sides[1]
    s = _fix_fracs(_fix_sqrt(s).replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def math_normalize(answer: str) -> str:
    """The MATH benchmark's answer normalization (rule 1)."""
    answer = answer.strip()
    m = _TEXT_WRAPPER.search(answer)
    if m is not None:
        answer = m.group("text").strip()
    try:
        return _math_strip(answer)
    except _GiveUp:
        return answer


# --- rule 2: the PRM800K normalization ---------------------------------------------------------

_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day",
          "week", "month", "year", "foot", "feet", "inch", "yard")  # fmt: skip
_UNIT_PATTERNS = [re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _UNITS]
_DEGREES = re.compile(r"\^ *\\circ")
_THIN_SPACE_COMMA = re.compile(r",\\! *")
_MINUS_SPACE = re.compile(r"- *")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")  # "7 3/4" -> "7+3/4"
_THOUSANDS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_LATEX_SYMBOLS = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _integral(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):  # inf, nan
        return False


def _drop_thousands_commas(text: str) -> str:
    """``1,000,000`` -> ``1000000``, leaving tuple commas (``1,2``) alone."""
    while True:
        out = _THOUSANDS.sub(r"\1\3\4", text)
        if out == text:
            return out
        text = out


def _int_text(text: str) -> str | None:
    """The integer a string denotes (``1,000.0`` -> ``1000``), or None."""
    value = _float_or_none(_drop_thousands_commas(text))
    if value is None or not _integral(value):
        return None
    return str(int(_float_or_none(text.replace(",", "")) or 0.0))


def _latex_to_text(expr: str) -> str:
    from pylatexenc.latex2text import LatexNodes2Text

    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
    expr = LatexNodes2Text().latex_to_text(expr.replace("\\frac", " \\frac"))
    for symbol, name in _LATEX_SYMBOLS:
        expr = expr.replace(symbol, name)
    return expr.strip()


def prm800k_normalize(expr: str) -> str:
    """PRM800K's normalization (rule 2)."""
    m = _TEXT_WRAPPER.search(expr)
    if m is not None:
        expr = m.group("text")
    for old, new in (("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "),
                     (" and ", " , "), ("million", "*10^6"), ("billion", "*10^9"),
                     ("trillion", "*10^12")):  # fmt: skip
        expr = expr.replace(old, new)
    for pattern in _UNIT_PATTERNS:
        expr = pattern.sub("", expr)
    expr = _DEGREES.sub("", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _THIN_SPACE_COMMA.sub("", expr)
    value = _float_or_none(expr)
    if value is not None and _integral(value):
        expr = str(int(round(value)))
    if "\\" in expr:
        try:
            expr = _latex_to_text(expr)
        except Exception:  # pylatexenc rejects malformed LaTeX: keep the text as it is
            pass
    expr = _MIXED_NUMBER.sub(r"\1+\2", _MINUS_SPACE.sub("-", expr))
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    as_int = _int_text(expr)
    return as_int if as_int is not None else expr


# --- rule 3: symbolic equality -----------------------------------------------------------------

_TUPLE_CHARS = "()[]"
_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_STACKED_OR_LONG_EXPONENT = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_SAFE_FOR_SYMPY = re.compile(r"[0-9a-zA-Z+\-*/^()., ]*")
MAX_UNKNOWN_LETTERS = 2


def _split_tuple(expr: str) -> list[str]:
    expr = _drop_thousands_commas(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (
        len(expr) > 2
        and expr[0] in _TUPLE_CHARS
        and expr[-1] in _TUPLE_CHARS
        and not any(ch in inner for ch in _TUPLE_CHARS)
    ):
        return [elem.strip() for elem in inner.split(",")]
    return [expr]


def _may_evaluate(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > MAX_UNKNOWN_LETTERS or "^{" in expr or "^(" in expr:
        return False
    if any(p.search(expr) for p in _STACKED_OR_LONG_EXPONENT):
        return False
    return _SAFE_FOR_SYMPY.fullmatch(expr) is not None and "**" not in expr


def _sympy_equal(truth: str, given: str) -> bool:
    import sympy
    from sympy.parsing import sympy_parser

    expr = f"({truth})-({given})"
    if not _may_evaluate(expr):
        return False
    transformations = sympy_parser.standard_transformations + (
        sympy_parser.implicit_multiplication_application,
    )
    try:
        diff = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=transformations)
        return sympy.simplify(diff) == 0
    except Exception:  # not an expression sympy reads (e.g. "x+"): not equal
        return False


def _is_int_text(text: str) -> bool:
    return _int_text(text) is not None


def _elements_equal(truth: str, given: str) -> bool:
    if _FRACTION.search(truth) and _FRACTION.search(given):
        return truth == given  # an unreduced fraction is not the reduced one
    if _is_int_text(truth) != _is_int_text(given):
        return False  # an integer answer must match exactly, not up to simplification
    return _sympy_equal(truth, given)


def grade_answer(given: str, truth: str) -> bool:
    """True when ``given`` is the same answer as ``truth`` (rules 1-3 of the module docstring)."""
    if math_normalize(truth) == math_normalize(given):
        return True
    truth_n, given_n = prm800k_normalize(truth), prm800k_normalize(given)
    if truth_n == given_n:
        return True
    if not given_n:
        return False
    truth_elems, given_elems = _split_tuple(truth_n), _split_tuple(given_n)
    if len(truth_elems) > 1 and (truth_n[0] != given_n[0] or truth_n[-1] != given_n[-1]):
        return False  # (a, b) is not [a, b]
    if len(truth_elems) != len(given_elems):
        return False
    return all(_elements_equal(t, g) for t, g in zip(truth_elems, given_elems))


# --- extraction ----------------------------------------------------------------------------------

_BOXED = "\\boxed{"


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced, stripped), or None when there is
    none or it is not closed."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    body = start + len(_BOXED)
    for i in range(body, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return text[body:i].strip()
            depth -= 1
    return None
