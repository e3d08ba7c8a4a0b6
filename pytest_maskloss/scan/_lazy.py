"""A module proxy imported on first attribute access: a scan whose files all fail the prefilter
never imports libcst (about a quarter of a second of start-up)."""

from __future__ import annotations

import importlib


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):  # only for names not read before: see the last line
        if self._module is None:
            self._module = importlib.import_module(self._name)
        value = getattr(self._module, attr)
        self.__dict__[attr] = value  # the next read is a plain attribute (libcst's never change)
        return value
