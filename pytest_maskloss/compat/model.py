"""What a Keras model holds (compiled loss, loss weights, dtype policy, replicas, layers,
outputs), read the same way on every flavour, and its predictions as numpy."""

from __future__ import annotations

import numpy as np

from pytest_maskloss.compat import flavours as F

# Layers whose training-mode output is random: a training-mode loss cannot be recomputed.
STOCHASTIC_LAYERS = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "RandomZoom", "RandomFlip", "RandomRotation",
}


def to_numpy(value):
    """A tensor, array or nested structure of them as numpy (structures keep their shape)."""
    if value is None or isinstance(value, (str, bytes)):
        return value  # text stays text: a list of strings is a batch for a preprocessor
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    if hasattr(value, "detach"):  # a torch tensor (Keras 3 on PyTorch), maybe requiring grad
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # torch hands numpy no bfloat16 (mixed_bfloat16)
            value = value.float()
        value = value.numpy()
    elif hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def is_compiled(model) -> bool:
    if getattr(model, "compiled", None):  # Keras 3
        return True
    return bool(getattr(model, "_is_compiled", False))  # Keras 2


def compiled_loss(model):
    """What ``compile(loss=...)`` was given (a string, function, Loss, list or dict)."""
    return getattr(model, "loss", None)


def output_names(model) -> list:
    return list(getattr(model, "output_names", None) or ["output"])


def loss_weights(model, names) -> dict:
    """``compile(loss_weights=...)`` by output name ({} when none were given)."""
    # Keras 3 keeps them on the CompileLoss, Keras 2 on the LossesContainer
    for holder in (getattr(model, "_compile_loss", None), getattr(model, "compiled_loss", None)):
        weights = getattr(holder, "_user_loss_weights", None) if holder is not None else None
        if weights is None:
            continue
        if isinstance(weights, dict):
            return {k: float(v) for k, v in weights.items()}
        if isinstance(weights, (list, tuple)):
            return {n: float(w) for n, w in zip(names, weights)}
    return {}


def compiled_metric_names(model) -> list:
    """The names ``compile(metrics=..., weighted_metrics=...)`` will log (before any step ran):
    strings as given, metric objects by their ``name``; per-output lists and dicts flattened."""
    # Keras 3 keeps the user's metrics on the CompileMetrics, Keras 2 on the MetricsContainer
    holder = getattr(model, "_compile_metrics", None) or getattr(model, "compiled_metrics", None)
    names = []

    def add(spec):
        if spec is None:
            return
        if isinstance(spec, dict):
            for value in spec.values():
                add(value)
        elif isinstance(spec, (list, tuple)):
            for value in spec:
                add(value)
        elif isinstance(spec, str):
            names.append(spec)
        else:
            name = getattr(spec, "name", None) or getattr(spec, "__name__", None)
            if isinstance(name, str):
                names.append(name)

    for attribute in ("_user_metrics", "_user_weighted_metrics"):
        add(getattr(holder, attribute, None))
    return list(dict.fromkeys(names))


def compute_dtype(model) -> str:
    policy = getattr(model, "dtype_policy", None)
    if policy is not None and getattr(policy, "compute_dtype", None):
        return str(policy.compute_dtype)
    return str(getattr(model, "_compute_dtype", None) or "float32")


def steps_per_execution(model) -> int:
    value = getattr(model, "steps_per_execution", None)
    if value is None:
        value = getattr(model, "_steps_per_execution", 1)
    if hasattr(value, "numpy"):
        value = value.numpy()
    try:
        return int(value)
    except TypeError:
        return 1


def num_replicas(model) -> int:
    """Replicas of the model's tf.distribute strategy (1 without one)."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        strategy = getattr(model, "_distribution_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


def all_layers(model) -> list:
    """Every layer, nested models' layers included, each once, in model order."""
    seen = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if any(layer is s for s in seen):
            continue
        seen.append(layer)
        stack[0:0] = list(getattr(layer, "layers", []) or [])
    return seen


def own_step(model) -> bool:
    """Does the model's class define its own ``train_step`` or ``test_step`` (not Keras's)?"""
    for name in ("train_step", "test_step"):
        owner = next((cls for cls in type(model).__mro__ if name in cls.__dict__), None)
        if owner is not None and not is_keras_class(owner):
            return True
    return False


def is_keras_class(cls) -> bool:
    return cls.__module__.split(".")[0] in F.KERAS_PACKAGES


def output_layers(model) -> list:
    """The layer that produces each of the model's outputs (None where it cannot be told)."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        layers = getattr(model, "layers", [])
        return [layers[-1]] if layers else [None]
    found = []
    for tensor in outputs:
        history = getattr(tensor, "_keras_history", None)
        layer = getattr(history, "operation", None) or getattr(history, "layer", None)
        if layer is None and isinstance(history, tuple) and history:
            layer = history[0]
        found.append(layer)
    return found


def stochastic_layers(model) -> list:
    """Layers that make the training forward pass random (a Dropout with rate 0 does not)."""
    found = []
    for layer in all_layers(model):
        if type(layer).__name__ not in STOCHASTIC_LAYERS:
            continue
        if float(getattr(layer, "rate", getattr(layer, "stddev", 1)) or 0) > 0:
            found.append(layer)
    return found


def predict(model, x):
    """The model's inference-mode predictions for one batch, as numpy."""
    if num_replicas(model) > 1:
        # predict_on_batch under a tf.distribute strategy returns per-replica pieces joined
        # in ways that vary by version; a direct call runs the whole batch on one device
        return to_numpy(model(x, training=False))
    return to_numpy(model.predict_on_batch(x))


def regularisation(model) -> float:
    """Σ model.losses (weight regularisers, add_loss) as Keras adds them to the loss."""
    losses = list(getattr(model, "losses", []) or [])
    return float(sum(float(to_numpy(l)) for l in losses)) if losses else 0.0


def loss_tracker_state(model):
    """(Σ B·loss, Σ B) held by the loss tracker Keras 3 reports the ``loss`` from (a ``Mean``
    weighted by batch size), or None where there is none to read (Keras 2, a custom model)."""
    tracker = getattr(model, "_loss_tracker", None)
    total, count = getattr(tracker, "total", None), getattr(tracker, "count", None)
    if total is None or count is None:
        return None
    try:
        return float(to_numpy(getattr(total, "value", total))), float(to_numpy(getattr(count, "value", count)))
    except Exception:
        return None
