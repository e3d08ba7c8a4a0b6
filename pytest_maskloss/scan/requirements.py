"""What the scanner needs beyond the core install, asked before anything imports it.

libcst (and tomli on Python 3.10) come with the ``scan`` extra only, so that a training script
importing ``pytest_maskloss.keras`` does not install a parser it never uses. A scan started
without them stops with one sentence saying what to install, not an ``ImportError`` traceback.
"""

from __future__ import annotations

import importlib.util
import sys

INSTALL = "pip install 'pytest-maskloss[scan]'"


def _absent(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is None  # an import blocked on purpose
    return importlib.util.find_spec(name) is None


def missing() -> list[str]:
    """The scanner's dependencies this interpreter cannot import (without importing them)."""
    needed = ["libcst"] + (["tomli"] if sys.version_info < (3, 11) else [])
    return [name for name in needed if _absent(name)]


def problem(what: str = "maskloss scan") -> str | None:
    """The sentence to print when something is missing, else None."""
    absent = missing()
    if not absent:
        return None
    return f"{what} needs {' and '.join(absent)}, which pytest-maskloss installs with its scan extra: {INSTALL}"
