"""Reading what the scanner scans: Python files (any encoding PEP 263 allows) and notebooks;
and writing a file back atomically (fixes and cache entries).

Nothing here raises on bad input: every problem comes back as a ``SourceError`` with a message,
which the engine reports as ``MSK900``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import tokenize
from dataclasses import dataclass

from pytest_maskloss.scan.ipython import cell_python

MAX_BYTES = 8 * 1024 * 1024  # files larger than this are reported, not parsed


class SourceError(Exception):
    """A file that cannot be read as Python source (or as a notebook)."""


@dataclass
class Unit:
    """One piece of Python source: a whole file, or one notebook code cell.

    ``text`` is what is parsed (for a cell: the Python IPython would run, line for line, see
    :mod:`pytest_maskloss.scan.ipython`); ``original`` is the text findings point into and
    fixes are applied to: the same lines, columns moved by ``shift`` (per line, may be empty).
    """

    text: str
    original: str
    cell: int | None = None  # 1-based code-cell number
    cell_index: int | None = None  # index in the notebook's "cells" list
    shift: tuple[int, ...] = ()

    def column_in_original(self, line: int, col: int) -> int:
        """The 0-based column in ``original`` of column ``col`` of 1-based ``line`` of ``text``."""
        if 1 <= line <= len(self.shift):
            return col + self.shift[line - 1]
        return col


def decode_python(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise SourceError("binary file (NUL bytes), not Python source")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if "invalid or missing" in str(exc):
            raise SourceError("cannot decode as UTF-8 and no coding declaration") from None
        raise SourceError(f"bad encoding declaration: {exc}") from None
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise SourceError(f"cannot decode as {encoding}: {exc}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def read_notebook(data: bytes) -> list[Unit]:
    try:
        nb = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SourceError(f"notebook is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", []), list):
        raise SourceError("notebook has no list of cells")
    meta = nb.get("metadata")
    lang = None
    if isinstance(meta, dict):
        for key in ("kernelspec", "language_info"):
            sub = meta.get(key)
            if isinstance(sub, dict) and isinstance(sub.get("language"), str):
                lang = sub["language"].lower()
                break
    if lang not in (None, "python"):
        return []
    units = []
    number = 0
    for index, cell in enumerate(nb.get("cells", [])):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        number += 1
        src = cell.get("source", "")
        if isinstance(src, list):
            src = "".join(s for s in src if isinstance(s, str))
        if not isinstance(src, str):
            continue
        python = cell_python(src)
        units.append(Unit(text=python.text, original=src, cell=number, cell_index=index, shift=python.shift))
    return units


def read_units(path: str, data: bytes | None = None) -> list[Unit]:
    """Read ``path`` into units. Raises SourceError."""
    if data is None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise SourceError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise SourceError(f"file larger than {MAX_BYTES // (1024 * 1024)} MB, not scanned")
    if path.endswith(".ipynb"):
        return read_notebook(data)
    text = decode_python(data)
    return [Unit(text=text, original=text)]


def notebook_with_cells(data: bytes, new_sources: dict[int, str]) -> bytes:
    """The notebook ``data`` with the sources of cells (by index in ``cells``) replaced."""
    nb = json.loads(data.decode("utf-8-sig"))
    for index, src in new_sources.items():
        cell = nb["cells"][index]
        if isinstance(cell.get("source"), list):
            cell["source"] = src.splitlines(keepends=True)
        else:
            cell["source"] = src
    indent = 1
    text = data.decode("utf-8-sig")
    m = re.search(r"\n( +)\"", text)
    if m:
        indent = len(m.group(1))
    return (json.dumps(nb, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename (a reader never sees half a file; concurrent
    writers leave one whole version), keeping an existing file's permission bits."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".maskloss-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
