"""The scanner's design rule as one Fixit 2.x lint rule (for the benchmark only).

``MaskedModelStockLoss`` flags each ``compile(...)`` call with a stock Keras loss in a module
that builds a masked model: an ``Embedding`` with ``mask_zero=True`` (by keyword, or as the 6th
positional argument — Keras 3 — or the 7th — Keras 2) or a ``Masking`` layer. It works per
module, which is as close as a single Fixit visitor gets without building the scanner's model
graph, and it refines that with the one thing the corpus varies per model: when the mask is
consumed before the output (a recurrent layer without ``return_sequences=True``, or a global
pooling layer) and nothing in the module returns sequences, nothing is reported.

Names are resolved with libcst's ``QualifiedNameProvider`` (``tf.keras.layers.Embedding``,
``from tensorflow import keras as K``, ``import tensorflow.keras.layers as L`` ...), with
``tensorflow.keras``, ``tf_keras`` and ``keras`` treated alike; calls whose name does not
resolve (an assignment alias such as ``layers = tf.keras.layers``) fall back to the last
component of the name when the module imports Keras or TensorFlow at all.

Run alone with a ``fixit.toml`` such as::

    [tool.fixit]
    root = true
    enable-root-import = true
    disable = ["fixit.rules"]
    enable = ["scan_fixit_rule"]

next to this file (``bench_scan.py`` writes exactly that).
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import QualifiedNameProvider

from fixit import Invalid, LintRule, Valid

_PREFIXES = (
    ("tensorflow.python.keras.", "keras."),
    ("tensorflow.compat.v1.keras.", "keras."),
    ("tensorflow.compat.v2.keras.", "keras."),
    ("tensorflow.keras.", "keras."),
    ("tensorflow.losses.", "keras.losses."),
    ("tf_keras.src.", "keras."),
    ("tf_keras.", "keras."),
    ("keras.src.", "keras."),
    ("keras.api.", "keras."),
)
STOCK_LOSSES = {
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "binary_focal_crossentropy", "categorical_focal_crossentropy", "mean_squared_error", "mse",
    "MSE", "mean_absolute_error", "mae", "MAE", "mean_absolute_percentage_error", "mape",
    "mean_squared_logarithmic_error", "msle", "kl_divergence", "kld", "KLD",
    "kullback_leibler_divergence", "huber", "huber_loss", "log_cosh", "logcosh", "hinge",
    "squared_hinge", "categorical_hinge", "poisson", "cosine_similarity",
    "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
    "BinaryFocalCrossentropy", "CategoricalFocalCrossentropy", "MeanSquaredError",
    "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
    "KLDivergence", "Huber", "LogCosh", "Hinge", "SquaredHinge", "CategoricalHinge", "Poisson",
    "CosineSimilarity",
}
RNN = {"LSTM", "GRU", "SimpleRNN", "RNN"}
POOLING = {"GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D"}
KERAS_ROOTS = ("keras", "tensorflow", "tf_keras")


def _canonical(qname: str) -> str:
    for old, new in _PREFIXES:
        if qname.startswith(old):
            return new + qname[len(old):]
    return qname


def _dotted(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def _is_true(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "True"


class MaskedModelStockLoss(LintRule):
    """A masked sequence model compiled with a stock Keras loss: the reported loss may count padding."""

    MESSAGE = (
        "MSK001 masked model compiled with a stock Keras loss: the reported loss (and any "
        "exp(loss) perplexity) may count padding"
    )
    METADATA_DEPENDENCIES = (QualifiedNameProvider,)

    VALID = [
        Valid(
            """
            import tensorflow as tf
            model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(10)])
            model.compile("adam", "sparse_categorical_crossentropy")
            """
        ),
        Valid(
            """
            from tensorflow import keras
            model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.LSTM(8), keras.layers.Dense(2)])
            model.compile(loss="sparse_categorical_crossentropy")
            """
        ),
        Valid(
            """
            import keras
            def masked_loss(y_true, y_pred):
                return keras.ops.mean(y_pred)
            model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(10)])
            model.compile(optimizer="adam", loss=masked_loss)
            """
        ),
        Valid(
            """
            import re
            from torch import nn
            emb = nn.Embedding(10, 4, padding_idx=0)
            pattern = re.compile("sparse_categorical_crossentropy")
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import tensorflow as tf
            model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(10)])
            model.compile("adam", "sparse_categorical_crossentropy")
            """
        ),
        Invalid(
            """
            from tensorflow.keras import layers, losses, models
            model = models.Sequential([layers.Masking(0.0), layers.LSTM(8, return_sequences=True), layers.Dense(3)])
            model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
            """
        ),
        Invalid(
            """
            import tensorflow as tf
            layers = tf.keras.layers
            model = tf.keras.Sequential([layers.Embedding(10, 4, mask_zero=True), layers.Dense(10)])
            loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
            model.compile(optimizer="adam", loss=loss_fn)
            """
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.imports_keras = False
        self.masked = False
        self.returns_sequences = False
        self.consumes_mask = False
        self.stock_vars: set[str] = set()
        self.stock_compiles: list[cst.Call] = []

    # ------------------------------------------------------------------ helpers
    def _leaves(self, func: cst.BaseExpression) -> set[str]:
        """Keras leaf names the callee may be (``Embedding`` ...), empty when not Keras."""
        leaves = set()
        for q in self.get_metadata(QualifiedNameProvider, func, set()):
            c = _canonical(q.name)
            if c.startswith("keras."):
                leaves.add(c.rsplit(".", 1)[1])
        if not leaves and self.imports_keras:
            dotted = _dotted(func)
            if dotted is not None:
                leaves.add(dotted.rsplit(".", 1)[-1])
        return leaves

    def _stock(self, expr: cst.BaseExpression | None) -> bool:
        if expr is None:
            return False
        if isinstance(expr, cst.SimpleString):
            return expr.evaluated_value in STOCK_LOSSES if isinstance(expr.evaluated_value, str) else False
        if isinstance(expr, cst.Name) and expr.value in self.stock_vars:
            return True
        if isinstance(expr, (cst.Dict,)):
            return any(isinstance(e, cst.DictElement) and self._stock(e.value) for e in expr.elements)
        if isinstance(expr, (cst.List, cst.Tuple)):
            return any(self._stock(e.value) for e in expr.elements)
        target = expr.func if isinstance(expr, cst.Call) else expr
        if isinstance(target, (cst.Name, cst.Attribute)):
            return bool(self._leaves(target) & STOCK_LOSSES)
        return False

    @staticmethod
    def _arg(call: cst.Call, keyword: str, position: int) -> cst.BaseExpression | None:
        for i, a in enumerate(call.args):
            if a.keyword is not None and a.keyword.value == keyword:
                return a.value
        positional = [a for a in call.args if a.keyword is None and not a.star]
        if len(positional) > position:
            return positional[position].value
        return None

    # ------------------------------------------------------------------ visitors
    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if _dotted(alias.name).split(".")[0] in KERAS_ROOTS:  # type: ignore[union-attr]
                self.imports_keras = True

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and (_dotted(node.module) or "").split(".")[0] in KERAS_ROOTS:
            self.imports_keras = True

    def visit_Assign(self, node: cst.Assign) -> None:
        if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            if self._stock(node.value) and not isinstance(node.value, cst.SimpleString):
                self.stock_vars.add(node.targets[0].target.value)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "compile":
            if _dotted(func.value) in ("re", "regex", "torch"):
                return
            if self._stock(self._arg(node, "loss", 1)):
                self.stock_compiles.append(node)
            return
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return
        leaf = func.value if isinstance(func, cst.Name) else func.attr.value
        if leaf not in ("Embedding", "Masking", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
                        "GlobalAvgPool1D", "GlobalMaxPool1D") and leaf not in RNN:
            return
        leaves = self._leaves(func)
        if "Masking" in leaves:
            self.masked = True
        elif "Embedding" in leaves:
            positional = [a for a in node.args if a.keyword is None and not a.star]
            kw = [a.value for a in node.args if a.keyword is not None and a.keyword.value == "mask_zero"]
            if (kw and _is_true(kw[0])) or any(
                len(positional) > p and _is_true(positional[p].value) for p in (5, 6)
            ):
                self.masked = True
        elif leaves & RNN:
            rs = self._arg(node, "return_sequences", 99)
            if rs is not None and _is_true(rs):
                self.returns_sequences = True
            else:
                self.consumes_mask = True
        elif leaves & POOLING:
            self.consumes_mask = True

    def leave_Module(self, original_node: cst.Module) -> None:
        if not self.masked or not self.stock_compiles:
            return
        if self.consumes_mask and not self.returns_sequences:
            return
        for call in self.stock_compiles:
            self.report(call)
