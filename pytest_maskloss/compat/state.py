"""A model's state (variables, optimizer and metric variables, ``history``), copied and put back,
so a check or an audit leaves the caller's model exactly as it found it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ModelState:
    variables: list  # (variable, value) of the model's own variables
    optimizer: list  # (variable, value) of the optimizer's
    metrics: list  # (variable, value) of the compiled metrics'
    history: object
    had_history: bool


def _model_variables(model) -> list:
    variables = getattr(model, "variables", None)
    if variables is None:
        variables = model.weights
    return list(variables)


def optimizer_variables(model) -> list:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return []
    variables = getattr(optimizer, "variables", [])
    if callable(variables):  # Keras 2 optimizer_v2
        variables = variables()
    return list(variables)


def metric_variables(model) -> list:
    variables = getattr(model, "metrics_variables", None)  # Keras 3
    if variables is not None:
        return list(variables)
    out = []
    for metric in getattr(model, "metrics", []) or []:
        out.extend(getattr(metric, "variables", []) or [])
    return out


def build_optimizer(model) -> None:
    """Create the optimizer's slot variables now, with their initial values.

    A check that trains would otherwise create them during the check, and restoring a
    snapshot could not remove them again; built up front they are snapshotted and restored.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    variables = model.trainable_variables
    try:
        if hasattr(optimizer, "build") and not getattr(optimizer, "built", False):
            optimizer.build(variables)
        elif hasattr(optimizer, "_create_all_weights"):  # Keras 2 optimizer_v2
            optimizer._create_all_weights(variables)
    except Exception:  # an optimizer that cannot be built early is built by the first step
        pass


def sync_jax_state(model) -> None:
    """Keras 3 on JAX keeps training state outside the variables during fit; write it back."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def snapshot(model) -> ModelState:
    """Everything ``fit``/``evaluate``/``*_on_batch`` can change, copied."""
    sync_jax_state(model)

    def copy(variables):
        return [(v, np.array(v.numpy())) for v in variables]

    return ModelState(
        variables=copy(_model_variables(model)),
        optimizer=copy(optimizer_variables(model)),
        metrics=copy(metric_variables(model)),
        history=getattr(model, "history", None),
        had_history=hasattr(model, "history"),
    )


def _assign(pairs, strict: bool) -> None:
    for variable, value in pairs:
        try:
            variable.assign(value)
        except Exception:
            if strict:
                raise


def restore_weights(model, state: ModelState, strict: bool = True) -> None:
    """Put the model's own variables back (not the optimizer's or the metrics')."""
    sync_jax_state(model)
    _assign(state.variables, strict)


def restore(model, state: ModelState, strict: bool = True) -> None:
    """Put everything back. ``strict=False`` skips what cannot be assigned (the audit must
    never fail a test); the check is strict."""
    restore_weights(model, state, strict)
    _assign(state.optimizer, strict)
    _assign(state.metrics, strict)
    if state.had_history:
        try:
            model.history = state.history
        except Exception:
            if strict:
                raise


def hold_weights_callback(info, model, state: ModelState):
    """A fit callback that puts the starting weights back after every batch.

    With the weights held, every batch of the epoch is computed with the same weights, so the
    epoch figure fit reports can be compared with a reference computed from one set of
    predictions, whatever the optimizer, learning rate or schedule.
    """
    base = info.module.callbacks.Callback

    class HoldWeights(base):
        def on_train_batch_end(self, batch, logs=None):
            restore_weights(model, state)

    return HoldWeights()
