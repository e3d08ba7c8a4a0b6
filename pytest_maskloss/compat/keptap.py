"""The tap a model keeps between observations (``compat.tap.LossTap``): the next check or audited
call of the same model, with the same losses and payload, reuses it, so the model's step
functions are traced once across checks and tests, until it is compiled again.

Kept on the model itself, not in a registry, so that the tap goes with the model (a registry
would keep every observed model alive).
"""

from __future__ import annotations

_SLOT = "_maskloss_tap"  # the model's attribute holding its kept tap


def kept_tap(model, key):
    """The tap kept on ``model`` by ``keep_tap`` if it was built for ``key`` and still fits the
    way the model runs its step (``LossTap.fits_model``), else None."""
    slot = model.__dict__.get(_SLOT)
    tap = slot.tap if isinstance(slot, _TapSlot) else None
    if tap is None or tap.model is not model or tap.key != key:
        return None
    return tap if tap.fits_model() else None


def keep_tap(model, tap):
    """Keep ``tap`` on ``model`` for the next observation of it: its step functions are then
    traced once across checks and tests."""
    # Keras layers track attribute assignments: bypass that (the slot is not model state)
    object.__setattr__(model, _SLOT, _TapSlot(tap))


class _TapSlot:
    """Holds a kept tap; copies and pickles of the model get an empty slot (a tap holds a lock
    and the step functions traced for that one model)."""

    def __init__(self, tap=None):
        self.tap = tap

    def __deepcopy__(self, memo):
        return _TapSlot()

    def __copy__(self):
        return _TapSlot()

    def __reduce__(self):
        return (_TapSlot, ())
