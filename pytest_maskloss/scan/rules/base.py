"""What every rule shares: the :class:`Rule` base class, the raw finding a rule yields, the
typed examples (:class:`Invalid`), and the helpers that word locations and mask origins in
messages.

A rule is one small class in its own module (``rules/mskNNN_*.py``) with its documentation as
its docstring (ruff's sections: ``## What it does``, ``## Why is this bad?``, ``## Example``,
``## Use instead``, ``## Fix safety``) and its ``VALID`` and ``INVALID`` examples beside it; the
tests (tests/scan/test_rules.py) and the rule pages of the docs (docs/rules/) are generated from them.

Examples may start with a ``# keras-version: X`` line: the example is then checked for that
targeted Keras version (otherwise the version is unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from pytest_maskloss.scan import edits, syntax
from pytest_maskloss.scan.findings import Fix
from pytest_maskloss.scan.values import Loc, TensorV

MASKED_LOSS = "pytest_maskloss.keras.MaskedLoss"


@dataclass(frozen=True)
class Invalid:
    """An example that must produce the rule's code, and the source it must become: what the
    rule's fix produces (unsafe fixes included) when it offers one, else the correction by
    hand. Either way ``fixed`` produces none of the rule's code."""

    code: str
    fixed: str


def example_keras_version(source: str) -> str | None:
    """The ``# keras-version: X`` header of an example, if any."""
    m = re.search(r"^# keras-version: (\S+)", source, re.M)
    return m.group(1) if m else None


@dataclass
class Raw:
    """A finding before positions, noqa and config are applied."""

    loc: Loc
    message: str
    severity: str = "error"
    fix: Fix | None = None
    related: tuple = ()


class Rule:
    code: str = ""
    name: str = ""
    summary: str = ""
    VALID: list[str] = []
    INVALID: list[Invalid] = []

    def check(self, an):  # pragma: no cover - interface
        """Yield :class:`Raw` findings for one ``ModuleAnalysis``."""
        raise NotImplementedError


def make_fix(description: str, build: Callable[[], list], safe: bool = False) -> Fix | None:
    """A :class:`Fix` from the edits ``build()`` returns; None when they cannot be built (a node
    without a position, ...): such a fix is dropped, never a crash."""
    try:
        return Fix(description, tuple(build()), safe)
    except Exception:
        return None


def where(loc: Loc | None, here) -> str:
    """``line N`` (``cell C line N`` in a notebook) in the module ``here``, else ``path:N``."""
    if loc is None:
        return ""
    pos = edits.position(loc)
    if pos is None:
        return ""
    line = pos[0]
    if loc.module is here:
        cell = loc.module.units[loc.unit].cell
        return f"cell {cell} line {line}" if cell is not None else f"line {line}"
    return f"{loc.module.display_path}:{line}"


def source_text(loc: Loc) -> str:
    """``Embedding(...)``: how a message names a mask source."""
    func = getattr(loc.node, "func", None)  # the source is a libcst Call
    if func is None:
        return "a mask source"
    return f"{(syntax.dotted(func) or 'layer').rsplit('.', 1)[-1]}(...)"


def mask_origin(t: TensorV, here) -> tuple[str, tuple]:
    """`` (mask from Embedding(...) at line 3)`` and the other files the mask came through."""
    if not t.sources:
        return "", ()
    src = t.sources[0]
    related = tuple(sorted({s.module.path for s in t.sources if s.module is not here}))
    return f" (mask from {source_text(src)} at {where(src, here)})", related
