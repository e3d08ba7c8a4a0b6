"""A notebook code cell as the Python IPython would run, with a map back to the cell's text.

IPython (``IPython.core.inputtransformer2``) rewrites a cell before Python compiles it: a cell
pasted with an indent is dedented, ``>>>``/``In [1]:`` prompts are stripped, a ``%%magic``
first line hands the whole cell to that magic, and at the start of any logical line ``%magic``,
``!cmd``, ``!!cmd``, ``?obj``, ``obj?``/``obj??`` and the autocall escapes ``/ , ;`` become
calls into the shell, also inside blocks (``if ...:`` then an indented ``%pip install``) and
on the right of an assignment (``x = !ls``, ``x = %who_ls``). This module does the same with
one difference: the calls become plain statements the scanner sees as nothing (``pass``, or
``x = get_ipython()``), because it never runs a shell.

Lines are never added or removed, so a line of the result is the same line of the cell; only
columns move (dedent, stripped prompts, ``%time stmt``), and ``CellPython.shift`` says by how
much on each line. Nothing here imports IPython.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# cell magics whose body is Python run in the notebook's own namespace
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
# line magics whose argument is a Python statement run in the notebook's namespace
_PYTHON_LINE_MAGICS = frozenset({"time", "timeit"})
_ESCAPES = ("%", "!", "?", "/", ",", ";")
_PROMPT = re.compile(r"^(?:>>> ?|\.\.\. ?|In \[\d+\]: |\s*\.\.\.+: ?)")
_ASSIGN_ESCAPE = re.compile(r"^(\s*)((?:[\w.\[\]'\"]+\s*,\s*)*[\w.\[\]'\"]+)\s*=\s*[%!]")
_HELP_END = re.compile(r"^(\s*)[\w.\[\]\(\)'\"*]+\?\??\s*$")
_MAGIC_NAME = re.compile(r"%%?(\w+)")


@dataclass
class CellPython:
    """``text``: the cell as Python, line for line; ``shift[i]``: how many columns of line i+1
    of the cell were taken away in front (a column of ``text`` plus the shift is the cell's)."""

    text: str
    shift: tuple[int, ...]

    def column_in_cell(self, line: int, col: int) -> int:
        if 1 <= line <= len(self.shift):
            return col + self.shift[line - 1]
        return col


def cell_python(cell: str) -> CellPython:
    lines = cell.splitlines(keepends=True)
    shift = [0] * len(lines)
    lines = _dedent(lines, shift)  # IPython's order: leading indent, then prompts
    lines = _strip_prompts(lines, shift)
    first = _first_code_line(lines)
    if first is not None and lines[first].lstrip().startswith("%%"):
        m = _MAGIC_NAME.match(lines[first].lstrip())
        name = m.group(1) if m else ""
        lines[first] = _blank(lines[first])
        if name not in _PYTHON_CELL_MAGICS:  # the body is not Python (%%bash, %%writefile, ...)
            lines = lines[:first + 1] + [_blank(line) for line in lines[first + 1:]]
            return CellPython("".join(lines), tuple(shift))
    out = []
    open_state = _LineState()
    i = 0
    while i < len(lines):
        line = lines[i]
        if open_state.inside():  # continuation of a bracket, string or backslash
            open_state.feed(line)
            out.append(line)
            i += 1
            continue
        replaced = _escaped(line, shift, i)
        if replaced is None:
            open_state.feed(line)
            out.append(line)
            i += 1
            continue
        out.append(replaced)
        i += 1
        # an escaped command continues over lines ending in a backslash
        while i < len(lines) and lines[i - 1].rstrip("\r\n").endswith("\\"):
            out.append(_blank(lines[i]))
            i += 1
    return CellPython("".join(out), tuple(shift))


def _escaped(line: str, shift: list, i: int) -> str | None:
    """The statement standing for an IPython line (or None: plain Python)."""
    body = line.rstrip("\r\n")
    newline = line[len(body):]
    stripped = body.lstrip()
    indent = body[: len(body) - len(stripped)]
    if not stripped:
        return None
    if stripped[0] in _ESCAPES:
        m = _MAGIC_NAME.match(stripped)
        if m and stripped[0] == "%" and not stripped.startswith("%%") and m.group(1) in _PYTHON_LINE_MAGICS:
            rest = stripped[m.end():]
            statement = rest.lstrip()
            if statement and not statement.startswith("-"):  # `%time x = f()` runs `x = f()`
                shift[i] += m.end() + (len(rest) - len(statement))
                return indent + statement + newline
        return indent + "pass" + newline
    m = _ASSIGN_ESCAPE.match(body)
    if m:
        return f"{m.group(1)}{m.group(2)} = get_ipython()" + newline
    if _HELP_END.match(body) and not body.rstrip().endswith(("??=", "?=")):
        return indent + "pass" + newline
    return None


class _LineState:
    """Is the next physical line the continuation of a logical line (open bracket, open
    triple-quoted string, trailing backslash)? A small lexer: strings, comments, brackets."""

    def __init__(self):
        self.depth = 0
        self.quote: str | None = None  # the open triple quote
        self.backslash = False

    def inside(self) -> bool:
        return self.depth > 0 or self.quote is not None or self.backslash

    def feed(self, line: str) -> None:
        text = line.rstrip("\r\n")
        self.backslash = False
        i, n = 0, len(text)
        while i < n:
            if self.quote is not None:
                end = text.find(self.quote, i)
                while end != -1 and _escaped_at(text, end):
                    end = text.find(self.quote, end + 1)
                if end == -1:
                    self.backslash = False
                    return
                i = end + 3
                self.quote = None
                continue
            c = text[i]
            if c == "#":
                return
            if c in "\"'":
                if text.startswith(c * 3, i):
                    self.quote = c * 3
                    i += 3
                    continue
                end = i + 1
                while end < n and (text[end] != c or _escaped_at(text, end)):
                    end += 1
                i = end + 1
                continue
            if c in "([{":
                self.depth += 1
            elif c in ")]}":
                self.depth = max(0, self.depth - 1)
            i += 1
        self.backslash = text.endswith("\\") and self.quote is None


def _escaped_at(text: str, pos: int) -> bool:
    backslashes = 0
    while pos - backslashes - 1 >= 0 and text[pos - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _blank(line: str) -> str:
    body = line.rstrip("\r\n")
    return line[len(body):] or ""


def _first_code_line(lines) -> int | None:
    for i, line in enumerate(lines):
        if line.strip():
            return i
    return None


def _dedent(lines: list, shift: list) -> list:
    """IPython's leading_indent: when the first non-blank line is indented, that indent is
    removed from every line that starts with it."""
    first = _first_code_line(lines)
    if first is None:
        return lines
    line = lines[first]
    prefix = line[: len(line) - len(line.lstrip(" \t"))]
    if not prefix:
        return lines
    out = []
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            out.append(line[len(prefix):])
            shift[i] += len(prefix)
        else:
            out.append(line)
    return out


def _strip_prompts(lines: list, shift: list) -> list:
    """IPython's prompt stripping: ``>>> ``/``... `` or ``In [n]: ``/``...: `` prompts, when
    the first line of the cell has one."""
    first = _first_code_line(lines)
    if first is None or not re.match(r"^(?:>>> ?|In \[\d+\]: )", lines[first]):
        return lines
    out = []
    for i, line in enumerate(lines):
        m = _PROMPT.match(line)
        if m:
            out.append(line[m.end():])
            shift[i] += m.end()
        else:
            out.append(line)
    return out
