"""Write .env as make assignments, with the values docker compose reads from it.

The Makefile runs this with the system's python3 (before .venv exists) and includes what it prints:
each `KEY=VALUE` becomes `KEY ?= VALUE`, so a variable set in the environment wins, as with compose.
The value is what compose would see: quotes removed ('single' literal, "double" with backslash
escapes), an unquoted value's ` # comment` dropped, `${NAME}` and `${NAME:-default}` taken from the
other settings (not in 'single' quotes), and every other `$`, `#` or trailing backslash kept as it is
written (make would otherwise expand, cut or join it; compose also expands a bare `$NAME`, which is why
a `$` in a password wants 'single' quotes). A line make cannot hold (a value over several lines, a key that is
not a variable name) becomes a make `$(error ...)` naming the line. Only the standard library: it
runs before anything is installed. tests/test_static.py checks it against python-dotenv.

    python3 scripts/dotenv_mk.py .env > .run/env.mk
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path

_BINDING = re.compile(r"\s*(?:export\s+)?(?P<key>[^=#\s]+)\s*(?:=(?P<space>[^\S\n]*)(?P<value>.*))?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SINGLE = re.compile(r"'((?:\\.|[^'\\])*)'(?:\s*#.*|\s*)\Z")
_DOUBLE = re.compile(r'"((?:\\.|[^"\\])*)"(?:\s*#.*|\s*)\Z')
_SINGLE_ESCAPES = re.compile(r"\\[\\']")
_DOUBLE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")
_VARIABLE = re.compile(r"\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}")


def _decode(escapes: re.Pattern[str], text: str) -> str:
    return escapes.sub(lambda m: codecs.decode(m.group(0), "unicode-escape"), text)


def _literal(text: str) -> str:
    """Text make keeps as it is: `$` doubled, `#` escaped (and the backslashes before it doubled:
    make reads `\\#` as a backslash, then a comment)."""
    return re.sub(r"(\\*)#", lambda m: m[1] * 2 + "\\#", text.replace("$", "$$"))


class Unreadable(Exception):
    """A value make cannot hold."""


def _interpolated(text: str, key: str) -> str:
    """`${NAME}` as make's `$(NAME)` (the environment's or .env's), `${NAME:-d}` as `$(if $(NAME),
    $(NAME),d)`. A reference to the key being set is empty (or its default): `?=` sets it only when the
    environment has not, and make would refuse a variable that refers to itself."""
    out, cursor = [], 0
    for match in _VARIABLE.finditer(text):
        out.append(_literal(text[cursor : match.start()]))
        name, default = match["name"], match["default"]
        if default is not None and any(c in default for c in "()"):
            raise Unreadable(f"{key}: a ${{NAME:-default}} whose default holds a parenthesis")
        if name == key:
            out.append(_literal(default or ""))
        elif default is None:
            out.append(f"$({name})")
        else:
            out.append(f"$(if $({name}),$({name}),{_literal(default)})")
        cursor = match.end()
    out.append(_literal(text[cursor:]))
    return "".join(out)


def _value(raw: str, spaced: bool) -> tuple[str, bool] | None:
    """The value and whether it interpolates, or None when the quotes do not close on this line."""
    if raw.startswith("'"):
        match = _SINGLE.match(raw)
        return (_decode(_SINGLE_ESCAPES, match[1]), False) if match else None
    if raw.startswith('"'):
        match = _DOUBLE.match(raw)
        return (_decode(_DOUBLE_ESCAPES, match[1]), True) if match else None
    if spaced and raw.startswith("#"):  # `KEY= # comment`: empty (`KEY=#x` is the value `#x`)
        return "", False
    return re.sub(r"\s+#.*", "", raw).rstrip(), True


def assignment(line: str, number: int) -> str | None:
    """The make line for one line of .env (None for a blank line or a comment)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    binding = _BINDING.fullmatch(line)
    if binding is None or not _NAME.match(binding["key"]):
        return f"$(error .env line {number}: not KEY=VALUE with KEY a variable name: {_literal(line)})"
    raw = binding["value"]
    if raw is None:  # a bare `KEY`: compose takes it from the environment; nothing to set here
        return None
    parsed = _value(raw, spaced=bool(binding["space"]))
    if parsed is None or "\n" in parsed[0] or "\r" in parsed[0]:
        return f"$(error .env line {number}: {binding['key']}: make cannot hold a value over several lines)"
    value, interpolates = parsed
    try:
        text = _interpolated(value, binding["key"]) if interpolates else _literal(value)
    except Unreadable as problem:
        return f"$(error .env line {number}: {_literal(str(problem))})"
    # `$()` (empty) keeps leading spaces, which make drops, and a final backslash, which it joins.
    if text[:1].isspace():
        text = "$()" + text
    if text.endswith("\\"):
        text += "$()"
    return f"{binding['key']} ?= {text}"


def main(path: str) -> None:
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first line
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as problem:
        print(f"$(error .env is not UTF-8 text: byte {problem.start})")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        made = assignment(line, number)
        if made is not None:
            print(made)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".env")
