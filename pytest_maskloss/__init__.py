"""pytest-maskloss: catch Keras models whose reported loss is not the mean over real tokens.

This module is imported by pytest in every run of an environment where the plugin is
installed, so it imports nothing heavy: TensorFlow, Keras and numpy are loaded only when a
check runs (``assert_masked_loss`` is resolved lazily below).
"""

from pytest_maskloss.errors import MaskLossError, MaskLossInputError, MaskLossMismatch

__version__ = "0.1.0.dev0"

__all__ = [
    "MaskLossError",
    "MaskLossInputError",
    "MaskLossMismatch",
    "assert_masked_loss",
    "check_masked_loss",
    "__version__",
]

_LAZY = {
    "assert_masked_loss": "pytest_maskloss.check.api",
    "check_masked_loss": "pytest_maskloss.check.api",
}


def __getattr__(name):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pytest_maskloss' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
