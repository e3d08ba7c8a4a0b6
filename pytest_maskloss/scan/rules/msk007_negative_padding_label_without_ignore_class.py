"""MSK007 negative-padding-label-without-ignore-class."""

from __future__ import annotations

from pytest_maskloss.compat import flavours
from pytest_maskloss.scan import kerasnames as K
from pytest_maskloss.scan import syntax
from pytest_maskloss.scan._lazy import LazyModule
from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule
from pytest_maskloss.scan.values import Loc, LossV, Qual, Str

cst = LazyModule("libcst")

_BACKENDS = {flavours.JAX: flavours.JAX, "torch": flavours.TORCH, flavours.TENSORFLOW: flavours.TENSORFLOW}


class NegativePaddingLabelWithoutIgnoreClass(Rule):
    """Padding labels set to a negative id (`-100`, `-1`) with a sparse cross-entropy that has no
    `ignore_class`, on the JAX or PyTorch backend.

    ## What it does
    Finds `compile` calls whose loss is a stock sparse cross-entropy
    (`"sparse_categorical_crossentropy"`, the function, or `SparseCategoricalCrossentropy()`
    without `ignore_class=`) in a file that selects the JAX or PyTorch backend
    (`os.environ["KERAS_BACKEND"] = "jax"` or `os.environ.setdefault("KERAS_BACKEND", "torch")`)
    and pads its labels with a negative id: a negative integer given as a padding or fill value
    (`pad_value=-100`, `padding_value=-1`, `constant_values=-100`, `fill_value=-100`,
    `value=-100`), as the third argument of a `where(...)`, or assigned into a subscript
    (`labels[labels == 0] = -100`). Files that select no backend, or TensorFlow, are not
    reported.

    ## Why is this bad?
    On Keras 3 with the JAX and PyTorch backends a negative label is scored 0 while the
    divisor still counts its position, so the reported loss shrinks as padding grows (3.15.1
    measured: 1.096396 reported where the token mean is 1.754234). On TensorFlow the same labels
    raise an error instead, so nothing is silently misreported there.

    Severity: **error** on the JAX and PyTorch backends.

    ## Example
    ```python
    os.environ["KERAS_BACKEND"] = "jax"
    labels = np.where(labels == 0, -100, labels)
    model.compile("adam", "sparse_categorical_crossentropy")
    ```

    ## Use instead
    ```python
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(ignore_class=-100))
    ```
    """

    code = "MSK007"
    name = "negative-padding-label-without-ignore-class"
    summary = "negative padding labels with a sparse cross-entropy without ignore_class on JAX or PyTorch"
    VALID = [
        """
import os
os.environ["KERAS_BACKEND"] = "jax"
import keras
import numpy as np
labels = np.where(labels == 0, -100, labels)
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(ignore_class=-100))
""",
        """
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras
import numpy as np
labels = np.where(labels == 0, -100, labels)
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
        """
import os
os.environ["KERAS_BACKEND"] = "torch"
import keras
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
    ]
    INVALID = [
        Invalid(
            code="""
import os
os.environ["KERAS_BACKEND"] = "jax"
import keras
import numpy as np
labels = np.where(labels == 0, -100, labels)
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
            fixed="""
import os
os.environ["KERAS_BACKEND"] = "jax"
import keras
import numpy as np
labels = np.where(labels == 0, -100, labels)
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(ignore_class=-100))
""",
        ),
        Invalid(
            code="""
import os
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
y[y == 0] = -1
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
            fixed="""
import os
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
y[y == 0] = -1
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1))
""",
        ),
    ]

    def check(self, an):
        # the file must select its backend (a file that selects none is never reported): the
        # text test first spares the visit of every module that compiles a model
        if not an.compiles or not any("KERAS_BACKEND" in unit.text for unit in an.units):
            return
        backend, negative = _scan_module(an)
        if negative is None or not an.target.negative_labels_scored_zero(backend):
            return
        for c in an.compiles:
            for value, node in c.losses:
                name = _sparse_without_ignore_class(value)
                if name is None:
                    continue
                yield Raw(
                    Loc(an, c.loc.unit, node, c.loc.top),
                    f"{name} without ignore_class, and the labels are padded with {negative} "
                    f"(KERAS_BACKEND={backend}): on JAX and PyTorch a negative label is scored 0 while the "
                    f"divisor still counts its position, so the reported loss shrinks with padding; pass "
                    f"ignore_class={negative}",
                    "error",
                )


def _sparse_without_ignore_class(value) -> str | None:
    if isinstance(value, Str) and value.value == "sparse_categorical_crossentropy":
        return repr(value.value)
    if isinstance(value, LossV) and value.kind == "stock" and value.name == "SparseCategoricalCrossentropy":
        return None if value.ignore_class is not None else "SparseCategoricalCrossentropy()"
    if isinstance(value, Qual) and "sparse_categorical_crossentropy" in value.keras_leaves() & K.LOSS_FUNCTIONS:
        return "sparse_categorical_crossentropy"
    return None


_PAD_KEYWORDS = ("pad", "fill", "constant_values", "value")


def _text(node) -> str | None:
    """The value of a plain string literal, else None (never raises on odd literals)."""
    if not isinstance(node, cst.SimpleString):
        return None
    try:
        value = node.evaluated_value
    except Exception:  # noqa: BLE001 - libcst evaluates with literal_eval
        return None
    return value if isinstance(value, str) else None


def _negative(node) -> int | None:
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and isinstance(node.expression, cst.Integer):
        try:
            return -int(node.expression.value, 0)
        except ValueError:
            return None
    return None


def _scan_module(an):
    """(backend the file selects or None, a negative padding label it uses or None): the last
    backend selected and the first negative label, in the order of the source."""
    backend = negative = None
    for module in an.modules:
        if module is None:
            continue
        for node in syntax.walk_in_order(module):
            if isinstance(node, cst.Assign):
                target = node.targets[0].target if node.targets else None
                if isinstance(target, cst.Subscript):
                    key = target.slice[0].slice if len(target.slice) == 1 else None
                    if _text(getattr(key, "value", None)) == "KERAS_BACKEND":
                        backend = _BACKENDS.get((_text(node.value) or "").lower())
                    elif negative is None:
                        negative = _negative(node.value)
            elif isinstance(node, cst.Call):
                func = node.func
                leaf = func.attr.value if isinstance(func, cst.Attribute) else (func.value if isinstance(func, cst.Name) else "")
                args = list(node.args)
                if leaf == "setdefault" and len(args) >= 2 and _text(args[0].value) == "KERAS_BACKEND":
                    backend = _BACKENDS.get((_text(args[1].value) or "").lower())
                for i, arg in enumerate(args):
                    n = _negative(arg.value)
                    if n is None or negative is not None:
                        continue
                    keyword = arg.keyword.value if arg.keyword is not None else ""
                    if (keyword and any(w in keyword for w in _PAD_KEYWORDS)) or (leaf == "where" and i in (1, 2) and arg.keyword is None):
                        negative = n
    return backend, negative
