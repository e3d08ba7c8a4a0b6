"""Where nodes are, and the edits fixes are made of: libcst positions (computed per top-level
statement, so large files stay cheap), line/column to character offsets, and the two edits the
rules build (replace a node's text; add an ``import`` near the top of the file)."""

from __future__ import annotations

from pytest_maskloss.scan._lazy import LazyModule
from pytest_maskloss.scan.findings import Edit
from pytest_maskloss.scan.syntax import dotted
from pytest_maskloss.scan.values import Loc, Qual

cst = LazyModule("libcst")
_metadata = LazyModule("libcst.metadata")


def _cache(an, name: str) -> dict:
    return an.__dict__.setdefault(name, {})


def _module_positions(an, unit: int):
    cache = _cache(an, "_pos")
    if unit not in cache:
        wrapper = _metadata.MetadataWrapper(an.modules[unit], unsafe_skip_copy=True)
        cache[unit] = wrapper.resolve(_metadata.PositionProvider)
    return cache[unit]


def _top_offsets(an, unit: int) -> dict:
    """id(top-level statement) -> number of lines before it."""
    cache = _cache(an, "_tops")
    if unit not in cache:
        mod = an.modules[unit]
        lines = sum(mod.code_for_node(el).count("\n") for el in mod.header)
        table = {}
        for stmt in mod.body:
            table[id(stmt)] = lines
            lines += mod.code_for_node(stmt).count("\n")
        cache[unit] = table
    return cache[unit]


def _stmt_positions(an, unit: int, stmt):
    cache = _cache(an, "_stmt_pos")
    key = (unit, id(stmt))
    if key not in cache:
        mod = an.modules[unit]
        mini = cst.Module(body=[stmt], header=[], footer=[], default_indent=mod.default_indent, default_newline=mod.default_newline)
        cache[key] = _metadata.MetadataWrapper(mini, unsafe_skip_copy=True).resolve(_metadata.PositionProvider)
    return cache[key]


def position(loc: Loc):
    """(line, col0, end_line, end_col0) of a node, or None."""
    an = loc.module
    try:
        tops = _top_offsets(an, loc.unit)
        if loc.top is not None and id(loc.top) in tops:
            rng = _stmt_positions(an, loc.unit, loc.top).get(loc.node)
            if rng is not None:
                shift = tops[id(loc.top)]
                return rng.start.line + shift, rng.start.column, rng.end.line + shift, rng.end.column
        rng = _module_positions(an, loc.unit).get(loc.node)
    except Exception:
        return None
    if rng is None:
        return None
    return rng.start.line, rng.start.column, rng.end.line, rng.end.column


def offset(an, unit: int, line: int, col: int) -> int:
    """The character offset in one unit's original text (what fixes edit) of a 1-based line and
    0-based column of the parsed text (a notebook cell's columns may differ, see Unit.shift)."""
    starts = _cache(an, "_line_starts")
    col = an.units[unit].column_in_original(line, col)
    if unit not in starts:
        text = an.units[unit].original
        table = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                table.append(i + 1)
        starts[unit] = table
    table = starts[unit]
    return table[min(line - 1, len(table) - 1)] + col


def code_for(loc: Loc) -> str:
    return loc.module.modules[loc.unit].code_for_node(loc.node)


def _edit(an, unit: int, start: int, end: int, text: str) -> Edit:
    return Edit(start, end, text, an.units[unit].cell)


def replace_edit(loc: Loc, text: str) -> Edit:
    """Replace the node's text by ``text`` (raises when the node has no position)."""
    pos = position(loc)
    an = loc.module
    return _edit(an, loc.unit, offset(an, loc.unit, pos[0], pos[1]), offset(an, loc.unit, pos[2], pos[3]), text)


def import_edits(an, module: str) -> list[Edit]:
    """An edit adding ``import module`` after the docstring and __future__ imports of the
    first unit, unless the module is imported already."""
    for value in an.globals.vars.values():
        if isinstance(value, Qual) and any(q == module or q.startswith(module + ".") for q in value.names):
            return []
    first = 0
    while first < len(an.modules) and an.modules[first] is None:
        first += 1
    if first >= len(an.modules):
        return []
    mod = an.modules[first]
    index = 0
    for i, stmt in enumerate(mod.body):
        if isinstance(stmt, cst.SimpleStatementLine) and stmt.body and (
            (i == 0 and isinstance(stmt.body[0], cst.Expr) and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))
            or (isinstance(stmt.body[0], cst.ImportFrom) and dotted(stmt.body[0].module) == "__future__")
        ):
            index = i + 1
            continue
        break
    if index < len(mod.body):
        pos = position(Loc(an, first, mod.body[index]))
        if pos is None:
            return []
        at = offset(an, first, pos[0], 0)
        lead = at - offset(an, first, pos[0], -an.units[first].column_in_original(pos[0], 0))
        if lead:  # a cell pasted with an indent (IPython dedents it): the import gets it too
            original = an.units[first].original
            return [_edit(an, first, at, at, f"import {module}\n" + original[at - lead:at])]
    else:
        at = len(an.units[first].original)
        if at and not an.units[first].original.endswith("\n"):
            return [_edit(an, first, at, at, "\nimport " + module + "\n")]
    return [_edit(an, first, at, at, f"import {module}\n")]
