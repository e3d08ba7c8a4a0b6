"""What differs between Keras 3, tf_keras and tf.keras 2.x, in one place.

Everything here is looked up from the model object itself (its class's module tells which
Keras built it), so a process that has both Keras 3 and tf_keras installed checks each model
with the Keras that made it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from pytest_maskloss.errors import MaskLossInputError


@dataclass(frozen=True)
class KerasInfo:
    flavour: str  # "keras3", "tf_keras" or "tf.keras"
    version: str
    backend: str  # "tensorflow", "jax", ...
    module: object  # the keras module (keras, tf_keras or tf.keras)

    @property
    def label(self):
        names = {"keras3": "Keras", "tf_keras": "tf_keras", "tf.keras": "tf.keras"}
        return f"{names[self.flavour]} {self.version} ({self.backend} backend)"

    @property
    def is_keras3(self):
        return self.flavour == "keras3"


def is_keras_model(obj) -> bool:
    """True for a Keras model of any flavour, without importing Keras."""
    for cls in type(obj).__mro__:
        if cls.__name__ == "Model" and cls.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
            return True
    return False


def keras_info(model) -> KerasInfo:
    if not is_keras_model(model):
        raise MaskLossInputError(
            f"expected a Keras model, got {type(model).__module__}.{type(model).__qualname__}"
        )
    root = next(
        c.__module__ for c in type(model).__mro__ if c.__name__ == "Model" and c.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")
    ).split(".")[0]
    if root == "tf_keras":
        module = importlib.import_module("tf_keras")
        import tensorflow as tf

        return KerasInfo("tf_keras", _version(module, tf), "tensorflow", module)
    if root == "keras":
        module = importlib.import_module("keras")
        if int(module.__version__.split(".")[0]) >= 3:
            return KerasInfo("keras3", module.__version__, module.config.backend(), module)
    import tensorflow as tf

    return KerasInfo("tf.keras", _version(tf.keras, tf), "tensorflow", tf.keras)


def _version(module, tf):
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.import_module("tf_keras").__version__
        except Exception:  # tf.keras of a TensorFlow without its own keras version attribute
            version = tf.__version__
    return version


def to_numpy(value):
    """A tensor, array or nested structure of them as numpy (structures keep their shape)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def is_compiled(model) -> bool:
    if getattr(model, "compiled", None):  # Keras 3
        return True
    return bool(getattr(model, "_is_compiled", False))  # Keras 2


def compiled_loss(model):
    return getattr(model, "loss", None)


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
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        strategy = getattr(model, "_distribution_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


# --- state: the check leaves the caller's model exactly as it found it ---------------------


def optimizer_variables(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return []
    variables = getattr(optimizer, "variables", [])
    if callable(variables):
        variables = variables()
    return list(variables)


def build_optimizer(model):
    """Create the optimizer's slot variables now, with their initial values.

    A check that trains would otherwise create them during the check, and restoring the
    snapshot could not remove them again; built up front they are snapshotted and restored.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    variables = model.trainable_variables
    try:
        if hasattr(optimizer, "build") and not getattr(optimizer, "built", False):
            optimizer.build(variables)
        elif hasattr(optimizer, "_create_all_weights"):  # tf.keras optimizer_v2
            optimizer._create_all_weights(variables)
    except Exception:  # an optimizer that cannot be built early is built by the first step
        pass


@dataclass
class ModelState:
    weights: list
    optimizer: list
    history: object
    had_history: bool


def snapshot(model) -> ModelState:
    build_optimizer(model)
    return ModelState(
        weights=[np.array(v.numpy()) for v in model.weights],
        optimizer=[np.array(v.numpy()) for v in optimizer_variables(model)],
        history=getattr(model, "history", None),
        had_history=hasattr(model, "history"),
    )


def restore_weights(model, state: ModelState):
    for variable, value in zip(model.weights, state.weights):
        variable.assign(value)


def restore(model, state: ModelState):
    sync_jax_state(model)
    restore_weights(model, state)
    for variable, value in zip(optimizer_variables(model), state.optimizer):
        variable.assign(value)
    if state.had_history:
        try:
            model.history = state.history
        except Exception:
            pass


def sync_jax_state(model):
    """Keras 3 on JAX keeps training state outside the variables during fit; write it back."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def hold_weights_callback(info: KerasInfo, model, state: ModelState):
    """A fit callback that puts the starting weights back after every batch.

    With the weights held, every batch of the epoch is computed with the same weights, so the
    epoch figure fit reports can be compared with a reference computed from one set of
    predictions, whatever the optimizer, learning rate or schedule.
    """
    base = info.module.callbacks.Callback

    class HoldWeights(base):
        def on_train_batch_end(self, batch, logs=None):
            sync_jax_state(model)
            restore_weights(model, state)

    return HoldWeights()


# --- masks ---------------------------------------------------------------------------------


def get_mask(info: KerasInfo, tensor):
    if tensor is None:
        return None
    if info.is_keras3:
        try:
            from keras.src.backend import get_keras_mask

            return get_keras_mask(tensor)
        except ImportError:  # older Keras 3
            return getattr(tensor, "_keras_mask", None)
    return getattr(tensor, "_keras_mask", None)


def mask_source_layers(model):
    """Layers that start a mask: Embedding(mask_zero=True), Masking, or any other layer whose
    class defines compute_mask (a project-defined mask source)."""
    sources = []
    for layer in _all_layers(model):
        name = type(layer).__name__
        if name == "Embedding" and getattr(layer, "mask_zero", False):
            sources.append(layer)
        elif name == "Masking":
            sources.append(layer)
        elif _defines_compute_mask(layer):
            sources.append(layer)
    return sources


def _defines_compute_mask(layer):
    for cls in type(layer).__mro__:
        if cls.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
            return False
        if "compute_mask" in cls.__dict__:
            return True
    return False


def _all_layers(model):
    seen = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if any(layer is s for s in seen):
            continue
        seen.append(layer)
        stack[0:0] = list(getattr(layer, "layers", []) or [])
    return seen


def first_mask_dropper(info: KerasInfo, model, x):
    """Run a Sequential model layer by layer on ``x`` and return the name of the first layer
    whose input carries a mask and whose output does not (None when no layer drops it, or when
    the model is not a plain chain)."""
    if type(model).__name__ != "Sequential":
        return _functional_mask_dropper(info, model, x)
    value, mask = x, None
    for layer in model.layers:
        out = layer(value, mask=mask) if mask is not None and _accepts_mask(layer) else layer(value)
        out_mask = get_mask(info, out)
        if out_mask is None and mask is None:
            # a layer can start a mask only as its output's mask
            try:
                out_mask = layer.compute_mask(value, None)
            except Exception:
                out_mask = None
        if mask is not None and out_mask is None:
            return layer.name
        value, mask = out, out_mask
    return None


def _accepts_mask(layer):
    import inspect

    try:
        return "mask" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _functional_mask_dropper(info: KerasInfo, model, x):
    """For a functional model: the first layer (in the model's layer order) that receives a
    masked tensor and outputs an unmasked one, found by evaluating its inputs and output as
    sub-models of the model's inputs."""
    if not hasattr(model, "inputs"):
        return None

    def masks_of(tensors):
        probe = info.module.Model(model.inputs, tensors)
        out = probe(x, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [get_mask(info, o) is not None for o in outs]

    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            inputs = layer.input
            if not any(masks_of(inputs if isinstance(inputs, (list, tuple)) else [inputs])):
                continue
            if not any(masks_of([layer.output])):
                return layer.name
        except Exception:  # a layer used twice, nested model, ...: no name rather than a wrong one
            continue
    return None


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
