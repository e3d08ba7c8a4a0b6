"""Applying fixes: edits merged per file (overlapping fixes skipped), the result re-parsed
before anything is written, atomic writes (temp file + os.replace), unified diffs."""

from __future__ import annotations

import difflib

import libcst as cst

from pytest_maskloss.scan.ipython import cell_python
from pytest_maskloss.scan.source import (
    SourceError,
    decode_python,
    notebook_with_cells,
    read_notebook,
    write_atomic,
)


class FixError(Exception):
    pass


def choose(findings, unsafe: bool):
    """Findings whose fix applies: safe fixes always, unsafe ones with ``unsafe``."""
    return [f for f in findings if f.fix is not None and (f.fix.safe or unsafe)]


def _apply_edits(text: str, edits) -> str:
    for e in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        text = text[: e.start] + e.replacement + text[e.end :]
    return text


def _select_edits(findings):
    """Per unit (cell or None): non-overlapping edits of whole fixes; identical edits (an import
    added by two fixes) count once."""
    accepted: dict = {}
    applied = []
    for f in sorted(findings, key=lambda f: min((e.start for e in f.fix.edits), default=0)):
        new = [e for e in f.fix.edits]
        ok = True
        for e in new:
            for a in accepted.get(e.cell, []):
                if a == e:
                    continue
                if e.start < a.end and a.start < e.end or (e.start == e.end == a.start == a.end and a != e):
                    ok = False
        if not ok:
            continue
        for e in new:
            if e not in accepted.setdefault(e.cell, []):
                accepted[e.cell].append(e)
        applied.append(f)
    return accepted, applied


def fixed_text(text: str, findings) -> str:
    """``text`` (a file's source, not a notebook) with the fixes of ``findings`` applied."""
    accepted, _ = _select_edits([f for f in findings if f.fix is not None])
    return _apply_edits(text, accepted.get(None, []))


def fixed_content(path: str, findings):
    """(old bytes, new bytes, applied findings) for one file."""
    with open(path, "rb") as fh:
        data = fh.read()
    accepted, applied = _select_edits(findings)
    if not applied:
        return data, data, []
    if path.endswith(".ipynb"):
        units = read_notebook(data)
        new_sources = {}
        for u in units:
            edits = accepted.get(u.cell)
            if not edits:
                continue
            new = _apply_edits(u.original, edits)
            try:
                cst.parse_module(cell_python(new).text)
            except Exception as exc:
                raise FixError(f"{path}: cell {u.cell} would not parse after the fix ({type(exc).__name__}); not written") from None
            new_sources[u.cell_index] = new
        return data, notebook_with_cells(data, new_sources), applied
    text = decode_python(data)
    edits = accepted.get(None, [])
    new = _apply_edits(text, edits)
    try:
        cst.parse_module(new)
    except Exception as exc:
        raise FixError(f"{path}: would not parse after the fix ({type(exc).__name__}); not written") from None
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    bom = data.startswith(b"\xef\xbb\xbf")
    if encoding == "utf-8-sig":
        encoding = "utf-8"
    out = new.encode(encoding)
    if bom:
        out = b"\xef\xbb\xbf" + out
    return data, out, applied


def diff(path: str, old: bytes, new: bytes) -> str:
    try:
        a = old.decode("utf-8").splitlines(keepends=True)
        b = new.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        a = old.decode("latin-1").splitlines(keepends=True)
        b = new.decode("latin-1").splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=f"a/{path}", tofile=f"b/{path}"))


__all__ = ["FixError", "SourceError", "choose", "diff", "fixed_content", "fixed_text", "write_atomic"]
