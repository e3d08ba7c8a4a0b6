"""The runtime check, without pytest: run a model's own reporting paths on padded data and
compare every reported figure with the masked reference computed in numpy.

``assert_masked_loss`` / ``check_masked_loss`` (also exported by ``pytest_maskloss``) are the
entry points; ``guard.active()`` tells observers that a check is running. Importing the
package loads nothing heavy; the entry points load numpy (and the model's Keras is already
loaded by whoever built the model).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "assert_masked_loss": "pytest_maskloss.check.api",
    "check_masked_loss": "pytest_maskloss.check.api",
    "ALL_PATHS": "pytest_maskloss.check.choices",
    "GRANULARITIES": "pytest_maskloss.check.choices",
    "TOLERANCES": "pytest_maskloss.check.observation",
    "Report": "pytest_maskloss.check.report",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_maskloss.check' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
