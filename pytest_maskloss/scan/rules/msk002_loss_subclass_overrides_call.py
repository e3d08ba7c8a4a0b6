"""MSK002 loss-subclass-overrides-call."""

from __future__ import annotations

from pytest_maskloss.scan import edits, syntax
from pytest_maskloss.scan._lazy import LazyModule
from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule, make_fix
from pytest_maskloss.scan.values import Loc

cst = LazyModule("libcst")

# callee leaf names of the functions that read a tensor's Keras mask
MASK_GETTERS = frozenset({"get_keras_mask", "keras_mask", "get_mask", "_get_mask"})
MASK_ATTRIBUTE = "_keras_mask"
SAMPLE_WEIGHT = "sample_weight"
METHOD_DEPTH = 3  # how many self.<method>(...) calls deep a mask read is looked for


class LossSubclassOverridesCall(Rule):
    """A `keras.losses.Loss` subclass that overrides `__call__` and so bypasses the mask and
    the sample weights.

    ## What it does
    Finds classes deriving from `keras.losses.Loss` (or from a stock loss class, or from a
    project class that is one) that define `__call__`. Not reported: a `__call__` that itself
    applies the Keras mask *and* uses `sample_weight` (the mask read is `y_pred._keras_mask`,
    `getattr(y_pred, "_keras_mask", None)` or a call to `get_keras_mask`, `keras_mask`,
    `get_mask` or `_get_mask`, in `__call__` or in a method of the class or of a project base
    class that `__call__` reaches through `self.<method>(...)`, up to three calls deep), a
    `__call__` that hands `sample_weight` on to `super().__call__(...)`, and one that hands it
    on to the losses the class holds (`loss(y_t, y_p, sample_weight)` or
    `loss(..., sample_weight=...)`, the callee a plain name, there or in a method it reaches,
    as Keras's own `CompileLoss` does: each of those losses applies the mask itself). A
    `super().__call__(y_true, y_pred)` without the weights is reported: they are dropped.

    ## Why is this bad?
    Keras applies the mask and `sample_weight` inside `Loss.__call__`. An override that does
    not do that itself scores padding as real tokens, on every Keras version: in the probe
    (4 sequences with 6, 6, 2 and 1 real tokens of 6) it reports the unmasked mean 1.9392
    instead of the token mean 1.9448.

    Severity: **error** on every Keras version.

    ## Example
    ```python
    class MyLoss(keras.losses.Loss):
        def __call__(self, y_true, y_pred):
            return keras.ops.square(y_true - y_pred)
    ```

    ## Use instead
    ```python
    class MyLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.square(y_true - y_pred)
    ```

    ## Fix safety
    The fix renames `__call__` to `call` when the signature is exactly
    `(self, y_true, y_pred)`, the class has no `call` yet and `__call__` does not call
    `super().__call__`. It is unsafe: Keras then applies the mask, so the value changes.
    """

    code = "MSK002"
    name = "loss-subclass-overrides-call"
    summary = "a keras.losses.Loss subclass overriding __call__ (bypasses the mask and sample weights)"
    VALID = [
        """
import keras
class MyLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
""",
        """
class Helper:
    def __call__(self, y_true, y_pred):
        return 0
""",
        """
import keras
class Masked(keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        mask = y_pred._keras_mask
        w = mask if sample_weight is None else mask * sample_weight
        return keras.ops.sum(self.call(y_true, y_pred) * w) / keras.ops.sum(w)
""",
        """
import keras
def _get_mask(x):
    return getattr(x, "_keras_mask", None)
class Terms:
    def _terms(self, y_true, y_pred, sample_weight=None):
        return self._weights(y_pred, sample_weight)
    def _weights(self, y_pred, sample_weight):
        return _get_mask(y_pred) * sample_weight
class Masked(Terms, keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        return keras.ops.sum(values * weights) / keras.ops.sum(weights)
""",
        """
import keras
from pytest_maskloss.compat import keras_mask
class Base(keras.losses.Loss):
    def _weights(self, y_pred, sample_weight):
        return keras_mask(y_pred) * sample_weight
class Masked(Base):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return keras.ops.sum(self._weights(y_pred, sample_weight))
""",
        """
import keras
class Summed(keras.losses.Loss):
    def __init__(self, losses):
        super().__init__()
        self.losses = losses
    def __call__(self, y_true, y_pred, sample_weight=None):
        return self.call(y_true, y_pred, sample_weight)
    def call(self, y_true, y_pred, sample_weight=None):
        total = 0.0
        for loss in self.losses:
            total = total + loss(y_true, y_pred, sample_weight)
        return total
""",
        """
import keras
class Scaled(keras.losses.SparseCategoricalCrossentropy):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return 2.0 * super().__call__(y_true, y_pred, sample_weight=sample_weight)
""",
    ]
    INVALID = [
        Invalid(
            code="""
import tensorflow as tf
class MyLoss(tf.keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
""",
            fixed="""
import tensorflow as tf
class MyLoss(tf.keras.losses.Loss):
    def call(self, y_true, y_pred):
        return tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
""",
        ),
        Invalid(
            code="""
from tf_keras.losses import SparseCategoricalCrossentropy as SCCE
class Smoothed(SCCE):
    def __call__(self, y_true, y_pred):
        return super().__call__(y_true, y_pred)
""",
            fixed="""
from tf_keras.losses import SparseCategoricalCrossentropy as SCCE
class Smoothed(SCCE):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return super().__call__(y_true, y_pred, sample_weight)
""",
        ),
        Invalid(
            code="""
import keras
class Squared(keras.losses.Loss):
    def __call__(self, y_true, y_pred):
        return keras.ops.square(y_true - y_pred)
""",
            fixed="""
import keras
class Squared(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.ops.square(y_true - y_pred)
""",
        ),
        Invalid(
            code="""
import keras
def weighted_mean(values, sample_weight):
    return keras.ops.sum(values * sample_weight) / keras.ops.sum(sample_weight)
class Mean(keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return weighted_mean(keras.ops.square(y_true - y_pred), sample_weight)
""",
            fixed="""
import keras
class Mean(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.ops.square(y_true - y_pred)
""",
        ),
    ]

    def check(self, an):
        for c in an.classes:
            if c.kind != "loss" or "__call__" not in c.methods:
                continue
            fn = c.methods["__call__"].node
            loc = Loc(an, c.unit, fn.name, c.top)
            supers = [n for n in _walk(fn.body) if _is_super_call(n)]
            if supers:
                if any(_passes_sample_weight(n) for n in supers):
                    continue
                yield Raw(
                    loc,
                    f"{c.name}.__call__ calls super().__call__ without sample_weight: the sample "
                    f"weights are dropped (on every Keras version); pass sample_weight on, or "
                    f"override call(self, y_true, y_pred) instead",
                    "error",
                )
                continue
            if _uses_name(fn, SAMPLE_WEIGHT) and (_reaches(c, fn, _reads_mask) or _reaches(c, fn, _hands_weights_on)):
                continue
            fix = None
            if _renamable(fn) and "call" not in c.methods:
                fix = make_fix(
                    "rename __call__ to call (Keras then applies the mask: unsafe)",
                    lambda loc=loc: [edits.replace_edit(loc, "call")],
                )
            yield Raw(
                loc,
                f"{c.name} overrides __call__ of a Keras Loss: Keras's mask and sample_weight handling "
                f"(in Loss.__call__) is bypassed, so padding is averaged in on every Keras version; "
                f"override call(self, y_true, y_pred) and return the per-token loss",
                "error",
                fix,
            )


def _walk(node):
    return syntax.walk(node)  # every node below, in no order: these tests ask "any?"


def _renamable(fn) -> bool:
    params = fn.params
    return (
        len(params.params) == 3
        and not params.posonly_params
        and not params.kwonly_params
        and isinstance(params.star_arg, cst.MaybeSentinel)
        and params.star_kwarg is None
        and all(p.default is None for p in params.params)
    )


def _is_super_call(node) -> bool:
    """``super().__call__(...)``"""
    return (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value == "__call__"
        and isinstance(node.func.value, cst.Call)
        and syntax.dotted(node.func.value.func) == "super"
    )


def _passes_sample_weight(call) -> bool:
    """A third positional argument, ``sample_weight=``, or ``*args``/``**kwargs``."""
    positional = 0
    for arg in call.args:
        if arg.star:
            return True
        if arg.keyword is None:
            positional += 1
        elif arg.keyword.value == SAMPLE_WEIGHT:
            return True
    return positional >= 3


def _uses_name(fn, name: str) -> bool:
    return any(isinstance(n, cst.Name) and n.value == name for n in _walk(fn.body))


def _reads_mask(fn) -> bool:
    for n in _walk(fn.body):
        if isinstance(n, cst.Attribute) and n.attr.value == MASK_ATTRIBUTE:
            return True
        if isinstance(n, cst.Call):
            callee = syntax.dotted(n.func) or ""
            leaf = callee.rsplit(".", 1)[-1]
            if leaf in MASK_GETTERS:
                return True
            if callee == "getattr" and len(n.args) >= 2 and isinstance(n.args[1].value, cst.SimpleString):
                if n.args[1].value.evaluated_value == MASK_ATTRIBUTE:
                    return True
    return False


def _self_methods(fn) -> set[str]:
    """Names ``m`` of the ``self.m(...)`` calls in a method (``self`` = its first parameter)."""
    params = list(fn.params.posonly_params) + list(fn.params.params)
    if not params:
        return set()
    me = params[0].name.value
    return {
        n.func.attr.value
        for n in _walk(fn.body)
        if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute)
        and isinstance(n.func.value, cst.Name) and n.func.value.value == me
    }


def _hands_weights_on(fn) -> bool:
    """Does ``fn`` call another loss with the sample weights, ``loss(y_t, y_p, sample_weight)``
    or ``loss(..., sample_weight=...)``, the callee a plain name (a loss the class holds, as
    Keras's own ``CompileLoss`` calls each loss it was compiled with)? That loss's own
    ``__call__`` applies the mask. ``self.<method>(...)`` is followed instead (``_reaches``),
    and a two-argument helper (``weighted_mean(values, sample_weight)``) is not a loss."""
    for n in _walk(fn.body):
        if isinstance(n, cst.Call) and isinstance(n.func, cst.Name) and n.func.value != "super":
            positional = [a for a in n.args if a.keyword is None and not a.star]
            if any(a.keyword is not None and a.keyword.value == SAMPLE_WEIGHT for a in n.args):
                return True
            if len(positional) >= 3 and isinstance(positional[2].value, cst.Name) \
                    and positional[2].value.value == SAMPLE_WEIGHT:
                return True
    return False


def _reaches(cls, fn, test) -> bool:
    """Does ``test`` hold for ``fn``, or for one of the class's own methods (base classes of the
    project included) that it calls on ``self``, up to ``METHOD_DEPTH`` calls deep?"""
    seen = {id(fn)}
    frontier = [fn]
    for _ in range(METHOD_DEPTH + 1):
        following = []
        for f in frontier:
            if test(f):
                return True
            for name in _self_methods(f):
                ref = cls.find_method(name)
                if ref is not None and id(ref.node) not in seen:
                    seen.add(id(ref.node))
                    following.append(ref.node)
        frontier = following
    return False
