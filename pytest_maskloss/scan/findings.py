"""What the scanner reports: findings and the fixes attached to them (plain data, no libcst)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` of the scanned source (a file, or one notebook cell) by ``replacement``."""

    start: int
    end: int
    replacement: str
    # notebooks: the 1-based code cell the offsets refer to (None: the whole file)
    cell: int | None = None


@dataclass(frozen=True)
class Fix:
    """Edits that remove a finding. ``safe`` fixes keep what the code computes for the targeted
    Keras version and apply with ``--fix``; unsafe ones need ``--unsafe-fixes``."""

    description: str
    edits: tuple[Edit, ...]
    safe: bool


@dataclass(frozen=True)
class Finding:
    """One finding: ``path:line:col: CODE message`` with 1-based line and column.

    ``cell`` is the 1-based notebook code-cell number (line and column are then inside the cell).
    """

    path: str
    line: int
    col: int
    code: str
    message: str
    end_line: int | None = None
    end_col: int | None = None
    cell: int | None = None
    fix: Fix | None = field(default=None, compare=False)
    # added by the engine: "error", "warning" or "note" (SARIF levels); notes do not fail a run
    severity: str = field(default="error", compare=False)
    # the short rule name (e.g. "stock-loss-on-masked-output")
    rule: str | None = field(default=None, compare=False)
    # other files of the project that took part in the finding (cross-module links)
    related: tuple[str, ...] = field(default=(), compare=False)
