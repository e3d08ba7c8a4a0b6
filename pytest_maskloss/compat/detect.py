"""Which Keras: the one that built a model, the one this process trains with, and the one a
report header names (without importing it).

A model's flavour is read off its class (the package its ``Model`` base comes from), so a
process with both Keras 3 and tf_keras loaded checks each model with the Keras that made it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass

from pytest_maskloss.compat import flavours as F
from pytest_maskloss.errors import MaskLossInputError


@dataclass(frozen=True)
class KerasInfo:
    """The Keras a model was built with."""

    flavour: str  # one of flavours.FLAVOURS
    version: str
    backend: str  # one of flavours.BACKENDS
    module: object  # the keras module: keras, tf_keras or tf.keras

    @property
    def stack(self) -> str:
        """The stack name (``flavours.STACKS``) the reference and reports use."""
        return F.stack_name(self.flavour, self.backend)

    @property
    def label(self) -> str:
        return F.label(self.flavour, self.version, self.backend)

    @property
    def is_keras3(self) -> bool:
        return self.flavour == F.KERAS3

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return _version_tuple(self.version)


def _version_tuple(text) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _keras_model_base(cls):
    """The Keras ``Model`` class in ``cls``'s MRO, or None."""
    for klass in getattr(cls, "__mro__", ()):
        if klass.__name__ == "Model" and klass.__module__.split(".")[0] in F.KERAS_PACKAGES:
            return klass
    return None


def is_keras_model(obj) -> bool:
    """True for a Keras model of any flavour, without importing Keras."""
    return _keras_model_base(type(obj)) is not None


def is_keras_object(obj) -> bool:
    """True when ``obj``'s class comes from a Keras package (nothing is imported)."""
    return type(obj).__module__.split(".")[0] in F.KERAS_PACKAGES


def keras_info(model) -> KerasInfo:
    """The Keras that built ``model``; MaskLossInputError for anything else."""
    base = _keras_model_base(type(model))
    if base is None:
        raise MaskLossInputError(
            f"expected a Keras model, got {type(model).__module__}.{type(model).__qualname__}"
        )
    package = base.__module__.split(".")[0]
    if package == F.MODEL_PACKAGES[F.TF_KERAS]:
        module = importlib.import_module(package)
        return KerasInfo(F.TF_KERAS, _keras2_version(module), F.TENSORFLOW, module)
    if package == F.MODEL_PACKAGES[F.KERAS3]:
        module = importlib.import_module(package)
        if _major(module) >= 3:
            return KerasInfo(F.KERAS3, module.__version__, module.config.backend(), module)
    import tensorflow as tf

    return KerasInfo(F.TF_DOT_KERAS, _keras2_version(tf.keras), F.TENSORFLOW, tf.keras)


def _major(module) -> int:
    version = _version_tuple(getattr(module, "__version__", "0"))
    return version[0] if version else 0


def _keras2_version(module) -> str:
    version = getattr(module, "__version__", None)
    if version is None:  # tf.keras of a TensorFlow without its own version attribute
        import tensorflow as tf

        version = tf.__version__
    return str(version)


def legacy_requested() -> bool:
    """``TF_USE_LEGACY_KERAS`` asks for tf_keras (TensorFlow >= 2.16)."""
    return os.environ.get(F.LEGACY_ENV, "").strip().lower() in ("1", "true", "yes")


def process_keras():
    """The Keras module this process trains with, as a user's training script gets it.

    tf_keras when ``TF_USE_LEGACY_KERAS`` is set (and installed); else Keras 3
    (``import keras``, version 3 or later); else ``tf.keras`` (TensorFlow 2.10 and earlier
    ship ``keras`` 2.x, which ``tf.keras`` is). Imports Keras.
    """
    if legacy_requested():
        try:
            return importlib.import_module(F.MODEL_PACKAGES[F.TF_KERAS])
        except ImportError:  # TensorFlow <= 2.15 without tf_keras: tf.keras is Keras 2 anyway
            pass
    try:
        module = importlib.import_module("keras")
        if _major(module) >= 3:
            return module
    except ImportError:
        pass
    import tensorflow as tf

    return tf.keras


def module_info(module) -> KerasInfo:
    """KerasInfo of a Keras module (as ``process_keras`` returns)."""
    name = getattr(module, "__name__", "").split(".")[0]
    if name == F.MODEL_PACKAGES[F.TF_KERAS]:
        return KerasInfo(F.TF_KERAS, _keras2_version(module), F.TENSORFLOW, module)
    if name == "keras" and _major(module) >= 3:
        return KerasInfo(F.KERAS3, module.__version__, module.config.backend(), module)
    return KerasInfo(F.TF_DOT_KERAS, _keras2_version(module), F.TENSORFLOW, module)


def current_stack() -> str:
    """The stack of the Keras already imported in this process; nothing is imported.

    ``keras3-tensorflow`` when no Keras is loaded (the default a fresh install gets).
    """
    tf_keras_name = F.MODEL_PACKAGES[F.TF_KERAS]
    if legacy_requested() and tf_keras_name in sys.modules:
        return F.TF_KERAS
    keras = sys.modules.get("keras")
    version = _version_tuple(getattr(keras, "__version__", "") or "")
    if keras is not None and version:
        if version[0] >= 3:
            try:
                backend = keras.backend.backend()
            except Exception:  # a half-imported keras: fall back to the environment
                backend = os.environ.get("KERAS_BACKEND", F.TENSORFLOW)
            return F.stack_name(F.KERAS3, backend if backend in F.BACKENDS else F.TENSORFLOW)
        return F.TF_DOT_KERAS
    if tf_keras_name in sys.modules:
        return F.TF_KERAS
    return F.stack_name(F.KERAS3, F.TENSORFLOW)


def header_label() -> str:
    """Keras version and backend for a report header, without importing Keras: from the
    imported module when something already imported it, else from package metadata and the
    environment."""
    from importlib.metadata import version as dist_version

    parts = []
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "__version__"):
        if _major(keras) >= 3 and hasattr(keras, "config"):
            parts.append(F.label(F.KERAS3, keras.__version__, keras.config.backend()))
        else:
            parts.append(F.label(F.TF_DOT_KERAS, keras.__version__))
    else:
        try:
            installed = dist_version("keras")
            major = _version_tuple(installed)[:1] or (0,)
            if major[0] >= 3:
                parts.append(F.label(F.KERAS3, installed, configured_backend(), "; not imported yet"))
            else:
                parts.append(F.label(F.TF_DOT_KERAS, installed, note="; not imported yet"))
        except Exception:
            pass
    tf_keras = sys.modules.get(F.MODEL_PACKAGES[F.TF_KERAS])
    if tf_keras is not None or legacy_requested():
        try:
            installed = getattr(tf_keras, "__version__", None) or dist_version("tf-keras")
            note = f", {F.LEGACY_ENV}=1" if legacy_requested() else ""
            parts.append(F.label(F.TF_KERAS, installed, note=note))
        except Exception:
            pass
    return "; ".join(parts) or "Keras not installed"


def configured_backend() -> str:
    """The Keras 3 backend a fresh import would choose: ``KERAS_BACKEND``, else keras.json."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            return json.load(handle).get("backend", F.TENSORFLOW)
    except Exception:
        return F.TENSORFLOW
