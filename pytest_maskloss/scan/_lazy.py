"""A module proxy imported on first attribute access: a scan whose files all fail the prefilter
never imports libcst (about a quarter of a second of start-up)."""

from __future__ import annotations

import importlib


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
