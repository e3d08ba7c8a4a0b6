"""The numpy reference under its documented import path: ``pytest_maskloss.reference`` is
``pytest_maskloss.check.reference`` (per-token losses, with the loss specs of
``check.lossspec``); every name is looked up there."""

from pytest_maskloss.check import reference as _reference

__all__ = list(_reference.__all__)


def __getattr__(name):
    return getattr(_reference, name)
