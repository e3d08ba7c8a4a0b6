"""How a loss tap's tensors leave a TensorFlow step compiled by XLA, which cannot call the host:
as one more entry of the logs the step returns, taken out again before Keras sees the logs.

Where that entry is taken out, by trainer: Keras 3 wraps its XLA one-step function with
``_autoconvert_optionals`` inside the step function it makes; wrapping that wrapper reads each
step's entry right after the step, outside XLA, with a ``tf.py_function``, so the while loop of
``steps_per_execution > 1`` sends every step. Keras 2 has no such seam: its step function is
wrapped instead (``LogsStripped``), which sees only each execution's last step, so there several
steps per execution are refused (``TapUnavailable``), as is an XLA step over several replicas
(the entry would be reduced across them).
"""

from __future__ import annotations

import numpy as np

from pytest_maskloss.compat import flavours as F

LOGS_KEY = "__maskloss_observation__"  # the step's tensors, in the logs of an XLA step
UNLOADER = "_autoconvert_optionals"  # Keras 3 on TensorFlow: wraps the one-step XLA function


class TapUnavailable(Exception):
    """The model's step cannot be tapped; the message says why."""


def xla_compiled(model, info) -> bool:
    """Is the model's step compiled with XLA on TensorFlow (no host callbacks there)?"""
    if info.backend != F.TENSORFLOW:
        return False
    if info.is_keras3:
        try:
            return bool(model.jit_compile)
        except Exception:
            return False
    return bool(getattr(model, "_jit_compile", False))


def unloads_each_step(model, info) -> bool:
    """Can each XLA step's entry be taken out of its logs outside XLA, inside the step function
    (Keras 3 on TensorFlow, whose trainer wraps its one-step function with
    ``_autoconvert_optionals``)? Else only what the step function returns reaches the host."""
    if not (info.is_keras3 and info.backend == F.TENSORFLOW):
        return False
    make = getattr(type(model), "_make_function", None)
    # the trainer's code must call it, or only each execution's last step would be read
    return (callable(getattr(type(model), UNLOADER, None))
            and UNLOADER in getattr(getattr(make, "__code__", None), "co_names", ()))


def refuse_unfollowable_xla(model, info):
    """Raise ``TapUnavailable`` for an XLA step whose every step the tap cannot read."""
    from pytest_maskloss.compat.model import num_replicas, steps_per_execution

    steps = steps_per_execution(model)
    if steps > 1 and not unloads_each_step(model, info):
        raise TapUnavailable(
            f"the step is compiled with XLA (jit_compile=True) and runs {steps} steps per "
            "execution: XLA cannot call back to the host, and only the last step's logs leave "
            "the compiled loop; compile with steps_per_execution=1 (or jit_compile=False) to "
            "have it observed"
        )
    replicas = num_replicas(model)
    if replicas > 1:
        raise TapUnavailable(
            f"the step is compiled with XLA (jit_compile=True) under a tf.distribute strategy "
            f"of {replicas} replicas, which the observation does not follow (XLA cannot call "
            "back to the host); compile with jit_compile=False to have it observed"
        )


def _handed_over(tap, carried, phase):
    """``tap.receive_from_logs``, whose errors are kept on the tap, never raised into the step."""
    if not tap.active:
        return
    try:
        tap.receive_from_logs(carried, phase)
    except Exception as exc:
        tap.errors.append(f"{type(exc).__name__}: {exc}")


def unloaded_steps(tap, autoconvert):
    """Keras 3's ``_autoconvert_optionals`` wrapped: the one-step function it is given (for the
    phase whose step function ``tap._making`` says is being made) hands its entry to the host
    by a ``tf.py_function`` after each step, and returns the logs without it."""

    def wrap(step_function):
        phase = tap._making
        if phase is None:  # the predict function: no loss, nothing carried
            return autoconvert(step_function)

        def unloaded(data):
            logs = step_function(data)
            if not isinstance(logs, dict) or LOGS_KEY not in logs:
                return logs
            import tensorflow as tf

            logs = dict(logs)

            def host(*tensors):
                _handed_over(tap, tensors, phase)
                return np.int32(0)

            tf.py_function(host, list(logs.pop(LOGS_KEY)), Tout=tf.int32)
            return logs

        return autoconvert(unloaded)

    return wrap


class LogsStripped:
    """A step function of an XLA-compiled model with the tap's entry taken out of its logs:
    Keras (callbacks, History, the progress bar) sees the logs the step would return unobserved.
    It stays on the model after the tap closes when the step was first traced under the tap,
    since that trace keeps returning the entry."""

    def __init__(self, function, tap, phase):
        self._function = function
        self._tap = tap
        self._phase = phase

    def __call__(self, *args, **kwargs):
        logs = self._function(*args, **kwargs)
        if not isinstance(logs, dict) or LOGS_KEY not in logs:
            return logs
        logs = dict(logs)
        _handed_over(self._tap, logs.pop(LOGS_KEY), self._phase)
        return logs

    def __getattr__(self, name):  # e.g. get_concrete_function, the traced function's own API
        return getattr(self._function, name)
