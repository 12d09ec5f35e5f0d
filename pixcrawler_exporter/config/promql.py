"""What Prometheus parses of the rules settings: PromQL string literals and RE2 regexes.

promtool, and Prometheus when it loads the rules, refuse a rules file whose selector holds a
string or a regex their parser refuses, and then none of its rules is evaluated. These checks
refuse the same when the configuration is loaded, naming the setting. Strings follow
Prometheus's lexer (Go's escapes, no raw line break). Regexes follow Go's regexp/syntax with
Perl flags (RE2): read token by token, refusing what RE2 lacks (backreferences, lookaround,
atomic and possessive forms, conditionals, comments, escapes Go does not know such as \\Z) and
what it limits (repeat counts, nesting), and translated into Python's syntax, whose ``re``
then checks what is left (the structure).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

# Go's time.Duration holds at most 2^63 - 1 ns; Prometheus refuses a longer for: ("out of range").
MAX_DURATION_SECONDS = (2**63 - 1) // 10**9
# Go's regexp/syntax refuses a repeat count above 1000, nested repeats that multiply beyond it,
# and a parse tree more than 1000 levels high. Each group adds up to about five levels (capture,
# alternation, concatenation, repetition), so 100 groups deep stays well within that.
MAX_REPEAT = 1000
MAX_GROUP_DEPTH = 100

_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
_MAX_RUNE = 0x10FFFF
_STRING_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
_REGEX_ESCAPES = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}  # no \b: a word boundary
_POSIX_CLASSES = frozenset(  # a list literal would take a line per name
    "alnum alpha ascii blank cntrl digit graph lower print punct space upper word xdigit".split()  # noqa: SIM905
)
# Unicode general categories as Go's unicode package names them, and Any. Scripts (\p{Greek})
# are left out: which exist depends on the Unicode version of the Go that built Prometheus.
_UNICODE_CLASSES = frozenset(
    "Any C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So "  # noqa: SIM905
    "Z Zl Zp Zs".split()
)
_GO_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_CAPTURE_NAME = re.compile(r"[A-Za-z0-9_]+")


def unquote(body: str) -> bytes:
    """The value of the double-quoted PromQL string whose text between the quotes is ``body``
    (bytes: ``\\xff`` is one byte, as in Go)."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\n":
            raise ValueError(r"a line break inside a string (write \n)")
        if c != "\\":
            out += _utf8(c)
            i += 1
            continue
        if i + 1 == len(body):
            raise ValueError("an escape sequence that is not terminated")
        e = body[i + 1]
        if e in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[e])
            i += 2
            continue
        if e in _OCTAL:
            digits, base, top, i = 3, 8, 255, i + 1
        elif e == "x":
            digits, base, top, i = 2, 16, 255, i + 2
        elif e in "uU":
            digits, base, top, i = (4 if e == "u" else 8), 16, _MAX_RUNE, i + 2
        else:
            raise ValueError(f"an unknown escape sequence {_shown(body[i : i + 2])}")
        text = body[i : i + digits]
        allowed = _OCTAL if base == 8 else _HEX
        if len(text) < digits or any(d not in allowed for d in text):
            shown = _shown(body[body.rindex("\\", 0, i) : i + digits])
            raise ValueError(f"an escape sequence that is not {digits} digits: {shown}")
        value = int(text, base)
        if value > top or 0xD800 <= value < 0xE000:
            raise ValueError(f"an escape sequence that is not a Unicode code point: {text}")
        if top == 255:
            out.append(value)
        else:
            out += chr(value).encode()
        i += digits
    return bytes(out)


def check_regex(pattern: bytes) -> None:
    """Raise ValueError saying why Prometheus would refuse ``pattern`` as a matcher's regex."""
    try:
        text = pattern.decode()
    except UnicodeDecodeError:
        raise ValueError("a regex that is not valid UTF-8") from None
    translated = _Translation(text).run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python's FutureWarning about [[ and -- in a class
        try:
            re.compile(translated)
        except re.error as exc:
            raise ValueError(f"a regex that does not parse: {exc.msg}") from None
        except RecursionError:
            raise ValueError("a regex that nests too deeply") from None


def _shown(text: str) -> str:
    """``text`` for a one-line message: as it is when printable, else as Python would write it."""
    return text if text.isprintable() else repr(text)


def _utf8(c: str) -> bytes:
    try:
        return c.encode()
    except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8 in the environment
        raise ValueError("text that is not valid UTF-8") from None


@dataclass
class _Group:
    # How many copies of its innermost part the group's worst repeat makes (Go refuses > 1000).
    weight: int = 1
    last: int | None = None  # the weight of the last thing a repetition would repeat; None: none


class _Translation:
    """One pass over a Go regex: refuses what RE2 refuses, writes the rest in Python's syntax."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.groups = [_Group()]
        self.after_repeat = False

    def run(self) -> str:
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if c == "(":
                self._open()
            elif c == ")":
                self._close()
            elif c == "|":
                self.out.append("|")
                self.groups[-1].last = None
                self.after_repeat = False
                self.i += 1
            elif c in "*+?":
                self.i += 1
                self._repeat(c, 0 if c != "+" else 1, 1 if c == "?" else None, braces=False)
            elif c == "{" and (m := _GO_REPEAT.match(p, self.i)):
                low = int(m.group(1))
                high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                self.i = m.end()
                self._repeat(m.group(0), low, high, braces=True)
            elif c == "[":
                self._atom(self._class())
            elif c == "\\":
                self._escape()
            elif c in "^$":
                self._atom(f"(?:{c})")  # an operand in RE2 (^* is valid), not in Python
                self.i += 1
            else:
                self._atom("." if c == "." else re.escape(c))  # { not starting a repeat too
                self.i += 1
        if len(self.groups) > 1:
            raise ValueError("a regex with a missing closing )")
        return "".join(self.out)

    def _atom(self, text: str, weight: int = 1) -> None:
        self.out.append(text)
        group = self.groups[-1]
        group.last = weight
        group.weight = max(group.weight, weight)
        self.after_repeat = False

    def _repeat(self, op: str, low: int, high: int | None, braces: bool) -> None:
        if self.p.startswith("?", self.i):  # non-greedy
            op += "?"
            self.i += 1
        group = self.groups[-1]
        if self.after_repeat:
            raise ValueError(f"a regex repeating a repetition (…{op}): RE2 has no possessive forms")
        if group.last is None:
            raise ValueError(f"a regex with nothing before {op} to repeat")
        if braces and (
            low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or low > high))
        ):
            raise ValueError(f"a regex with an invalid repeat count {op} (at most {MAX_REPEAT})")
        count = low if high is None else high
        weight = 1 if high == 0 else group.last * max(count, 1)
        if braces and max(low, high or 0) >= 2 and weight > MAX_REPEAT:
            raise ValueError(
                f"a regex whose nested repeats make more than {MAX_REPEAT} copies (at {op})"
            )
        self.out.append(op)
        group.last = weight
        group.weight = max(group.weight, weight)
        self.after_repeat = True

    def _open(self) -> None:
        p, i = self.p, self.i
        if not p.startswith("(?", i):
            self._push("(", i + 1)
            return
        if p.startswith("(?P<", i):
            end = p.find(">", i + 4)
            if end < 0 or not _CAPTURE_NAME.fullmatch(p, i + 4, end):
                raise ValueError("a regex with an invalid named group (?P<name>...)")
            self._push("(", end + 1)  # unnamed for Python: RE2 allows names Python does not
            return
        for prefix, what in (
            ("(?<=", "lookbehind"),
            ("(?<!", "lookbehind"),
            ("(?<", "a named group written (?<name>...): older Prometheus wants (?P<name>...)"),
            ("(?P", "a backreference"),
            ("(?=", "lookahead"),
            ("(?!", "lookahead"),
            ("(?>", "an atomic group"),
            ("(?#", "a comment group"),
            ("(?(", "a conditional"),
        ):
            if p.startswith(prefix, i):
                raise ValueError(f"a regex with {what}, which RE2 does not support")
        # Flags as Go reads them: (?flags) or (?flags:re), flags from imsU, one - at most.
        j, negated, seen = i + 2, False, False
        while j < len(p):
            c = p[j]
            if c in "imsU":
                seen = True
            elif c == "-" and not negated:
                negated, seen = True, False
            elif c in ":)" and (seen or not negated):
                if c == ":":
                    self._push("(?:", j + 1)
                else:
                    # Flags for the rest of the group: nothing to repeat, nothing that nests.
                    # Python wants such flags at the start only; their meaning does not matter
                    # to whether the regex parses.
                    self.out.append("(?:)")
                    self.after_repeat = False
                    self.i = j + 1
                return
            else:
                break
            j += 1
        raise ValueError(
            f"a regex with unsupported syntax {_shown(p[i : j + 1])} "
            "(RE2's flags are i, m, s and U)"
        )

    def _push(self, text: str, end: int) -> None:
        self.out.append(text)
        self.groups.append(_Group(weight=1))
        if len(self.groups) - 1 > MAX_GROUP_DEPTH:
            raise ValueError(f"a regex nesting groups more than {MAX_GROUP_DEPTH} deep")
        self.after_repeat = False
        self.i = end

    def _close(self) -> None:
        if len(self.groups) == 1:
            raise ValueError("a regex with an unexpected )")
        inner = self.groups.pop()
        self.i += 1
        self._atom(")", inner.weight)

    def _escape(self) -> None:
        p, i = self.p, self.i
        if i + 1 == len(p):
            raise ValueError("a regex ending in a backslash")
        e = p[i + 1]
        if e in "AbBz":
            self._atom("(?:\\Z)" if e == "z" else f"(?:\\{e})")
            self.i += 2
        elif e == "Q":
            end = p.find("\\E", i + 2)
            if end < 0:
                # Prometheus wraps the regex in ^(?:...)$: a \Q left open would quote the ).
                raise ValueError(r"a regex with \Q but no \E after it")
            for c in p[i + 2 : end]:
                self._atom(re.escape(c))
            self.after_repeat = False
            self.i = end + 2
        elif e in "pP":
            self.i = self._unicode_class(i)
            self._atom(r"\w")
        elif e in "dDsSwW":
            self._atom(p[i : i + 2])
            self.i += 2
        else:
            code, self.i = self._literal_escape(i)
            self._atom(f"\\U{code:08x}")

    def _literal_escape(self, i: int) -> tuple[int, int]:
        """An escape that stands for one character (regexp/syntax's parseEscape): its code
        point and where what follows it starts."""
        p = self.p
        e, j = p[i + 1], i + 2
        if e in "123456789" and not (e in _OCTAL and p[j : j + 1] and p[j] in _OCTAL):
            raise ValueError(f"a regex with a backreference \\{e}, which RE2 does not support")
        if e in _OCTAL:
            value = int(e)
            for _ in range(2):
                if j < len(p) and p[j] in _OCTAL:
                    value, j = value * 8 + int(p[j]), j + 1
            return value, j
        if e == "x":
            if p.startswith("{", j):
                end = p.find("}", j)
                digits = p[j + 1 : end] if end > 0 else ""
                if digits and all(d in _HEX for d in digits) and int(digits, 16) <= _MAX_RUNE:
                    return int(digits, 16), end + 1
            elif len(p[j : j + 2]) == 2 and all(d in _HEX for d in p[j : j + 2]):
                return int(p[j : j + 2], 16), j + 2
            raise ValueError(f"a regex with an invalid escape {_shown(p[i : j + 3])}")
        if e in _REGEX_ESCAPES:
            return _REGEX_ESCAPES[e], j
        if e.isascii() and not e.isalnum():
            return ord(e), j  # an escaped punctuation character is itself
        raise ValueError(f"a regex with an escape RE2 does not know: {_shown(p[i:j])}")

    def _unicode_class(self, i: int) -> int:
        """Check \\pL, \\p{Lu}, \\P{^N} at ``i``; where what follows starts."""
        p, j = self.p, i + 2
        if p.startswith("{", j):
            end = p.find("}", j)
            if end < 0:
                raise ValueError(r"a regex with \p{ but no }")
            name, j = p[j + 1 : end], end + 1
        elif j < len(p):
            name, j = p[j], j + 1
        else:
            raise ValueError(r"a regex ending in \p")
        if name.removeprefix("^") not in _UNICODE_CLASSES:
            raise ValueError(
                f"a regex with the Unicode class {_shown(name)}: general categories such as L or "
                "Lu, and Any, are accepted (which scripts Prometheus knows depends on its build)"
            )
        return j

    def _class(self) -> str:
        """A bracketed class as Go reads it, written for Python; moves past it."""
        p = self.p
        j = self.i + 1
        negate = p.startswith("^", j)
        j += negate
        items: list[str] = []
        first = True
        while True:
            if j >= len(p):
                raise ValueError("a regex with a missing closing ]")
            if p[j] == "]" and not first:
                break
            first = False
            if p.startswith("[:", j) and (end := p.find(":]", j + 2)) >= 0:
                if p[j + 2 : end].removeprefix("^") not in _POSIX_CLASSES:
                    raise ValueError(f"a regex with an invalid class {_shown(p[j : end + 2])}")
                items.append(r"\w")
                j = end + 2
            elif p.startswith(("\\p", "\\P"), j):
                j = self._unicode_class(j)
                items.append(r"\w")
            elif p[j] == "\\" and p[j + 1 : j + 2] and p[j + 1] in "dDsSwW":
                items.append(p[j : j + 2])
                j += 2
            else:
                low, j = self._class_char(j)
                item = f"\\U{low:08x}"
                if p.startswith("-", j) and p[j + 1 : j + 2] not in ("", "]"):
                    high, j = self._class_char(j + 1)
                    if high < low:
                        raise ValueError("a regex with a class range that runs backwards")
                    item += f"-\\U{high:08x}"
                items.append(item)
        self.i = j + 1
        return "[" + "^" * negate + "".join(items) + "]"

    def _class_char(self, j: int) -> tuple[int, int]:
        if j >= len(self.p):
            raise ValueError("a regex with a missing closing ]")
        if self.p[j] == "\\":
            if j + 1 == len(self.p):
                raise ValueError("a regex with a missing closing ]")
            return self._literal_escape(j)
        return ord(self.p[j]), j + 1
