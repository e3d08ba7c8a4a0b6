"""What ``model.loss`` holds for one output, as a :class:`LossSpec` the numpy reference computes.

:func:`resolve_loss_spec` maps a string, a Keras loss function, a stock ``Loss`` object, a
``LossFunctionWrapper`` or a user subclass of a stock loss to a spec, duck-typed (class names,
MRO, ``__module__``, ``__name__``, ``get_config()``, ``fn``/``_fn_kwargs``), so importing this
module never loads TensorFlow, Keras or JAX. Anything it cannot map (a custom loss) resolves to
None: the check then evaluates the user's own loss per token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pytest_maskloss.compat import flavours as F

__all__ = ["LossSpec", "resolve_loss_spec", "supported_losses"]

_SUPPORTED = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "crossentropy",  # Keras 3 compile("crossentropy"/"ce"): picked from shapes per call
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "kl_divergence",
    "poisson",
)

# String identifiers accepted by compile() on any of the supported stacks, and the
# ``__name__`` of the loss functions (aliases such as ``mse`` or ``logcosh`` are the same
# function objects, so they carry the canonical ``__name__``).
_ALIASES = {
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "bce": "binary_crossentropy",
    "crossentropy": "crossentropy",
    "ce": "crossentropy",
    "mean_squared_error": "mean_squared_error",
    "mse": "mean_squared_error",
    "mean_absolute_error": "mean_absolute_error",
    "mae": "mean_absolute_error",
    "mean_absolute_percentage_error": "mean_absolute_percentage_error",
    "mape": "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error": "mean_squared_logarithmic_error",
    "msle": "mean_squared_logarithmic_error",
    "huber": "huber",
    "huber_loss": "huber",
    "log_cosh": "log_cosh",
    "logcosh": "log_cosh",
    "kl_divergence": "kl_divergence",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
    "poisson": "poisson",
}

# Stock Loss classes (same names in Keras 3, tf_keras and tf.keras 2.x).
_STOCK_CLASSES = {
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "Huber": "huber",
    "LogCosh": "log_cosh",
    "KLDivergence": "kl_divergence",
    "Poisson": "poisson",
}

# Keyword arguments of the loss functions that LossSpec models; any other keyword with a
# non-default value (e.g. a future option) makes the loss unknown rather than silently wrong.
_SPEC_KWARGS = {"from_logits", "label_smoothing", "delta", "axis", "ignore_class"}
# Keyword arguments that only matter to the Loss wrapper, never to the per-element values.
_WRAPPER_KWARGS = {"name", "reduction", "dtype", "fn"}

_KERAS_MODULE_NAMES = F.KERAS_PACKAGES + ("keras_core",)
_KERAS_MODULE_PREFIXES = tuple(f"{name}." for name in _KERAS_MODULE_NAMES)


@dataclass(frozen=True)
class LossSpec:
    """What the reference needs to know about one output's loss.

    ``name`` is one of :func:`supported_losses`. ``reduction`` is the Loss object's
    reduction (``None`` for strings and functions, whose wrapper Keras builds with its
    default). ``source`` says, for humans, how the spec was resolved. ``is_subclass`` is True
    for a user subclass of a stock class; ``overrides_call`` / ``overrides___call__`` say
    whether such a subclass (anywhere between it and the stock class) defines ``call`` /
    ``__call__`` itself — a ``__call__`` override bypasses Keras' masking (docs/failure-modes.md),
    and a ``call`` override may compute something else than the stock parent the spec
    describes (the caller decides whether to trust it).
    """

    name: str
    from_logits: bool = False
    label_smoothing: float = 0.0
    delta: float = 1.0
    axis: int = -1
    reduction: str | None = None
    ignore_class: int | None = None
    source: str = ""
    is_subclass: bool = False
    overrides_call: bool = False
    overrides___call__: bool = False


def supported_losses() -> tuple[str, ...]:
    """Canonical names :func:`per_token_loss` computes."""
    return _SUPPORTED


# --------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------


def _is_keras_module(module: Any) -> bool:
    module = module or ""
    return module in _KERAS_MODULE_NAMES or module.startswith(_KERAS_MODULE_PREFIXES)


def _canonical_string(identifier: str) -> str | None:
    if identifier in _STOCK_CLASSES:  # compile(loss="SparseCategoricalCrossentropy")
        return _STOCK_CLASSES[identifier]
    return _ALIASES.get(identifier.lower())


def _function_name(fn: Any) -> str | None:
    """Canonical name of a Keras loss function, or None if ``fn`` is not one."""
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not _is_keras_module(getattr(fn, "__module__", None)):
        return None
    return _ALIASES.get(name)


def _reduction_text(reduction: Any) -> str:
    # Keras 3 accepts reduction=None on a Loss object and treats it as "none"; the spec keeps
    # None for strings and functions only. tf_keras' ReductionV2 members are plain strings.
    return "none" if reduction is None else str(reduction)


def _spec_from_kwargs(name: str, kwargs: dict, **extra: Any) -> LossSpec | None:
    """Build a spec, or None when a keyword the spec does not model changes the loss."""
    fields: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _WRAPPER_KWARGS:
            continue
        if key not in _SPEC_KWARGS:
            return None
        if key == "from_logits":
            fields[key] = bool(value)
        elif key in ("label_smoothing", "delta"):
            fields[key] = float(value)
        elif key == "axis":
            if value is None or isinstance(value, bool):
                return None
            fields[key] = int(value)
        elif key == "ignore_class":
            fields[key] = None if value is None else int(value)
    return LossSpec(name=name, **fields, **extra)


def _stock_class_of(cls: type) -> type | None:
    for klass in cls.__mro__:
        if klass.__name__ in _STOCK_CLASSES and _is_keras_module(klass.__module__):
            return klass
    return None


def _overrides(cls: type, stock: type, attribute: str) -> bool:
    for klass in cls.__mro__:
        if klass is stock:
            return False
        if attribute in vars(klass):
            return True
    return False


def _loss_kwargs(loss: Any) -> dict:
    """The keyword arguments the loss passes to its function.

    ``_fn_kwargs`` is what LossFunctionWrapper actually passes (Keras 3's
    SparseCategoricalCrossentropy.get_config() omits ``axis``); ``get_config()`` is the
    fallback for objects that do not keep it.
    """
    fn_kwargs = getattr(loss, "_fn_kwargs", None)
    if isinstance(fn_kwargs, dict):
        return dict(fn_kwargs)
    try:
        config = loss.get_config()
    except Exception:  # a user get_config may need arguments it lacks
        return {}
    return {k: v for k, v in dict(config).items() if k in _SPEC_KWARGS}


def _describe_kwargs(kwargs: dict) -> str:
    shown = {k: v for k, v in kwargs.items() if k in _SPEC_KWARGS}
    return ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items()))


def resolve_loss_spec(loss: Any) -> LossSpec | None:
    """Map one output's ``model.loss`` entry to a :class:`LossSpec`.

    Accepts a string identifier (every alias of the supported stacks), a Keras loss function
    (matched by ``__name__`` and a Keras ``__module__``), a stock ``Loss`` instance (options
    from ``_fn_kwargs`` or ``get_config()``), a ``LossFunctionWrapper`` around a Keras loss
    function (what compile builds from strings and functions), a user subclass of a stock
    class (the MRO is walked to the first stock class), or a stock Loss class itself.
    Returns None for anything else — a custom function, a direct ``Loss`` subclass, a stock
    loss this module does not compute (focal, hinge, cosine, CTC, ...) or a stock loss with
    an option the spec does not model: the caller then needs a user per-token loss.
    """
    if loss is None:
        return None
    if type(loss).__module__.startswith("pytest_maskloss.keras") and hasattr(loss, "inner_loss"):
        # this package's masked losses: per token they are the stock loss they wrap
        inner = resolve_loss_spec(loss.inner_loss)
        if inner is None:
            return None
        return replace(inner, source=f"{type(loss).__name__} (per token: {inner.source})")
    if isinstance(loss, str):
        name = _canonical_string(loss)
        return None if name is None else LossSpec(name=name, source=f"string {loss!r}")
    if isinstance(loss, type):
        stock = _stock_class_of(loss)
        if stock is None or stock is not loss:
            return None
        return LossSpec(name=_STOCK_CLASSES[stock.__name__], source=f"class {stock.__name__}")

    cls = type(loss)
    stock = _stock_class_of(cls)
    if stock is not None:
        name = _STOCK_CLASSES[stock.__name__]
        fn = getattr(loss, "fn", None)
        if fn is not None and _function_name(fn) != name:
            return None  # a subclass that wraps a different function under a stock name
        kwargs = _loss_kwargs(loss)
        is_subclass = stock is not cls
        described = f"{stock.__name__}({_describe_kwargs(kwargs)})"
        source = f"subclass {cls.__name__} of {described}" if is_subclass else described
        return _spec_from_kwargs(
            name,
            kwargs,
            reduction=_reduction_text(getattr(loss, "reduction", None)),
            source=source,
            is_subclass=is_subclass,
            overrides_call=is_subclass and _overrides(cls, stock, "call"),
            overrides___call__=is_subclass and _overrides(cls, stock, "__call__"),
        )

    # LossFunctionWrapper (exactly, not a user subclass of it) around a Keras function.
    if cls.__name__ == "LossFunctionWrapper" and _is_keras_module(cls.__module__):
        name = _function_name(getattr(loss, "fn", None))
        if name is None:
            return None
        kwargs = _loss_kwargs(loss)
        return _spec_from_kwargs(
            name,
            kwargs,
            reduction=_reduction_text(getattr(loss, "reduction", None)),
            source=f"LossFunctionWrapper({', '.join(filter(None, [name, _describe_kwargs(kwargs)]))})",
        )

    if callable(loss):
        name = _function_name(loss)
        if name is not None:
            return LossSpec(name=name, source=f"function {loss.__module__}.{loss.__name__}")
    return None
