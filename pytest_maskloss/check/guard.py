"""Whether a check is running in this thread: the public re-entrancy guard.

The check calls the model's own ``evaluate``/``fit``/``*_on_batch``. Anything that watches those
calls (the ``--maskloss`` audit) asks ``active()`` and leaves the check's own calls alone.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class _Depth(threading.local):
    value = 0


_DEPTH = _Depth()


def active() -> bool:
    """True while a check runs in this thread."""
    return _DEPTH.value > 0


@contextmanager
def running():
    """Mark the enclosed code as a check."""
    _DEPTH.value += 1
    try:
        yield
    finally:
        _DEPTH.value -= 1
