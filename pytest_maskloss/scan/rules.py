"""The rules. Each is one small class with its VALID and INVALID examples beside it; the tests
(tests/scan/test_rules.py) are generated from those examples: every INVALID example must
produce that rule's code, every VALID example must produce none of it.

Examples may start with a ``# keras-version: X`` line: the example is then checked for that
targeted Keras version (otherwise the version is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_maskloss.scan import kerasnames as K
from pytest_maskloss.scan._lazy import LazyModule

cst = LazyModule("libcst")
A = LazyModule("pytest_maskloss.scan.values")
E = LazyModule("pytest_maskloss.scan.edits")  # imports libcst
S = LazyModule("pytest_maskloss.scan.syntax")

MASKED_LOSS = "pytest_maskloss.keras.MaskedLoss"


@dataclass
class Raw:
    """A finding before positions, noqa and config are applied."""

    loc: A.Loc
    message: str
    severity: str = "error"
    fix: object = None  # callable(analysis) -> (description, [(unit, start, end, text)], safe)
    related: tuple = ()


class Rule:
    code: str = ""
    name: str = ""
    summary: str = ""
    VALID: list[str] = []
    INVALID: list[str] = []

    def check(self, an: A.ModuleAnalysis):  # pragma: no cover - interface
        raise NotImplementedError


def _where(loc: A.Loc | None, here: A.ModuleAnalysis) -> str:
    if loc is None:
        return ""
    pos = E.position(loc)
    if pos is None:
        return ""
    line = pos[0]
    if loc.module is here:
        cell = loc.module.units[loc.unit].cell
        return f"cell {cell} line {line}" if cell is not None else f"line {line}"
    return f"{loc.module.display_path}:{line}"


def _version_note(target) -> str:
    return target.describe()


def _stock_name(value) -> str | None:
    if isinstance(value, A.Str) and value.value in K.LOSS_STRINGS:
        return repr(value.value)
    if isinstance(value, A.LossV) and value.kind == "stock":
        if value.reduction in ("sum", "none"):
            return None
        return f"{value.name}()"
    if isinstance(value, A.Qual):
        leaves = value.keras_leaves() & (K.LOSS_FUNCTIONS | K.LOSS_CLASSES)
        if leaves:
            return sorted(leaves)[0]
    return None


def _source_text(loc: A.Loc) -> str:
    node = loc.node
    if isinstance(node, cst.Call):
        name = S.dotted(node.func) or "layer"
        return f"{name.rsplit('.', 1)[-1]}(...)"
    return "a mask source"


def _mask_origin(t: A.TensorV, here) -> tuple[str, tuple]:
    if not t.sources:
        return "", ()
    src = t.sources[0]
    related = tuple(sorted({s.module.path for s in t.sources if s.module is not here}))
    return f" (mask from {_source_text(src)} at {_where(src, here)})", related


# ------------------------------------------------------------------------------------------


class StockLossOnMaskedOutput(Rule):
    code = "MSK001"
    name = "stock-loss-on-masked-output"
    summary = "a stock Keras loss compiled on a model whose output carries a padding mask"
    VALID = [
        """
from tensorflow import keras
model = keras.Sequential([keras.layers.Embedding(100, 8, mask_zero=True), keras.layers.LSTM(8), keras.layers.Dense(2)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
        """
from tensorflow import keras
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
        """
import keras
import pytest_maskloss.keras
model = keras.Sequential([keras.layers.Embedding(100, 8, mask_zero=True), keras.layers.Dense(5)])
model.compile("adam", pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
""",
        """
import keras
inp = keras.Input((None,))
x = keras.layers.Embedding(100, 8, mask_zero=True)(inp)
x = keras.layers.GlobalAveragePooling1D()(x)
out = keras.layers.Dense(2)(x)
model = keras.Model(inp, out)
model.compile(loss=keras.losses.SparseCategoricalCrossentropy())
""",
    ]
    INVALID = [
        """
# keras-version: 2.10
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
        """
from tensorflow.keras import layers as L
from tensorflow import keras
inp = keras.Input((None,))
x = L.Embedding(100, 8, mask_zero=True)(inp)
x = L.LSTM(8, return_sequences=True)(x)
out = L.Dense(5)(x)
model = keras.Model(inputs=inp, outputs=out)
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
        """
import tensorflow as tf
layers = tf.keras.layers
def build_model():
    model = tf.keras.Sequential()
    model.add(layers.Masking(0.0))
    model.add(layers.Dense(5))
    return model
model = build_model()
model.compile(loss=tf.keras.losses.sparse_categorical_crossentropy)
""",
        """
try:
    import keras
except ImportError:
    from tensorflow import keras
class Tagger(keras.Model):
    def __init__(self):
        super().__init__()
        self.emb = keras.layers.Embedding(100, 8, mask_zero=True)
        self.out = keras.layers.Dense(5)
    def call(self, x):
        return self.out(self.emb(x))
model = Tagger()
model.compile("adam", {"tags": "sparse_categorical_crossentropy"})
""",
        """
# keras-version: 2.10
from keras.layers import Embedding, Dense
from keras.models import Sequential
model = Sequential([Embedding(100, 8, None, None, None, None, True), Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
    ]

    def check(self, an):
        target = an.target
        for fact in an.compiles:
            t = fact.model.output()
            if t.state != A.MASKED:
                continue
            origin, related = _mask_origin(t, an)
            if fact.model.loc.module is not an:
                related = tuple(sorted(set(related) | {fact.model.loc.module.path}))
            for value, node in fact.losses:
                name = _stock_name(value)
                if name is None:
                    continue
                loc = A.Loc(an, fact.loc.unit, node, fact.loc.top)
                pad = target.padding_in_denominator
                if pad is True:
                    sev = "error"
                    msg = (
                        f"stock loss {name} on a masked model{origin}: {_version_note(target)} divides "
                        f"the masked loss by every position, padding included, so the reported loss "
                        f"and exp(loss) shrink as padding grows; use {MASKED_LOSS}(...) "
                        f"(or a loss that divides by the mask sum)"
                    )
                elif pad is False:
                    sev = "note"
                    msg = (
                        f"stock loss {name} on a masked model{origin}: per-batch loss is right on "
                        f"{_version_note(target)}, but the epoch loss of fit/evaluate averages batch "
                        f"means weighted by sequences, not tokens (not a token mean when batches hold "
                        f"different numbers of real tokens)"
                    )
                else:
                    sev = "warning"
                    msg = (
                        f"stock loss {name} on a masked model{origin}: {_version_note(target)}; on "
                        f"tf.keras < 2.11 the reported loss counts padding in the denominator (later "
                        f"versions: epoch loss weighted by sequences); set [tool.maskloss] "
                        f"keras-version or pin tensorflow/keras to decide"
                    )
                fix = None if sev == "note" else _wrap_fix(loc)
                yield Raw(loc, msg, sev, fix, related)


def _wrap_fix(loc: A.Loc):
    def build(an):
        text = E.code_for(loc)
        return (
            f"wrap the loss in {MASKED_LOSS}(...) (changes the reported value: unsafe)",
            [E.replace_edit(loc, f"{MASKED_LOSS}({text})")] + E.import_edits(an, "pytest_maskloss.keras"),
            False,
        )

    return build


class LossSubclassOverridesCall(Rule):
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
    ]
    INVALID = [
        """
import tensorflow as tf
class MyLoss(tf.keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
""",
        """
from tf_keras.losses import SparseCategoricalCrossentropy as SCCE
class Smoothed(SCCE):
    def __call__(self, y_true, y_pred):
        return super().__call__(y_true, y_pred)
""",
    ]

    def check(self, an):
        for c in an.classes:
            if c.kind != "loss" or "__call__" not in c.methods:
                continue
            fn = c.methods["__call__"].node
            loc = A.Loc(an, c.unit, fn.name, c.top)
            fix = None
            params = fn.params
            if (
                len(params.params) == 3
                and not params.posonly_params
                and not params.kwonly_params
                and isinstance(params.star_arg, cst.MaybeSentinel)
                and params.star_kwarg is None
                and all(p.default is None for p in params.params)
                and "call" not in c.methods
            ):
                def fix(an, loc=loc):
                    return ("rename __call__ to call (Keras then applies the mask: unsafe)", [E.replace_edit(loc, "call")], False)

            yield Raw(
                loc,
                f"{c.name} overrides __call__ of a Keras Loss: Keras's mask and sample_weight handling "
                f"(in Loss.__call__) is bypassed, so padding is averaged in on every Keras version; "
                f"override call(self, y_true, y_pred) and return the per-token loss",
                "error",
                fix,
            )


class CustomLossReducesTimeAxis(Rule):
    code = "MSK003"
    name = "custom-loss-reduces-time-axis"
    summary = "a custom loss used by a masked model reduces over the time axis before returning"
    VALID = [
        """
import tensorflow as tf
def loss_fn(y_true, y_pred):
    return tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", loss_fn)
""",
        """
import tensorflow as tf
def mse(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", mse)
""",
        """
import tensorflow as tf
def loss_fn(y_true, y_pred):
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile("adam", loss_fn)
""",
    ]
    INVALID = [
        """
import tensorflow as tf
def loss_fn(y_true, y_pred):
    loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return tf.reduce_mean(loss, axis=1)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", loss=loss_fn)
""",
        """
import keras
from keras import ops
class SeqLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return ops.mean(per_token, axis=-1)
inp = keras.Input((None,))
out = keras.layers.Dense(3)(keras.layers.Embedding(10, 4, mask_zero=True)(inp))
model = keras.Model(inp, out)
model.compile(loss=SeqLoss())
""",
        """
import tensorflow as tf
def masked_loss(y_true, y_pred):
    mask = tf.cast(y_true != 0, tf.float32)
    loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return tf.reduce_mean(loss * mask)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", masked_loss)
""",
    ]

    def check(self, an):
        seen = set()
        for fact in an.compiles:
            t = fact.model.output()
            if t.state != A.MASKED:
                continue
            for value, node in fact.losses:
                fn = None
                if isinstance(value, A.FuncRef):
                    fn = value
                elif isinstance(value, A.LossV) and value.kind == "custom_cls" and isinstance(value.ref, A.ClassRef):
                    fn = value.ref.find_method("call")
                if fn is None:
                    continue
                ret = fn.returns()
                if not isinstance(ret, A.ReductionV) or not ret.over_time:
                    continue
                if id(ret.loc.node) in seen:
                    continue
                seen.add(id(ret.loc.node))
                related = () if ret.loc.module is an else (an.path,)
                origin, rel2 = _mask_origin(t, an)
                yield Raw(
                    ret.loc,
                    f"custom loss {fn.node.name.value} reduces over the time axis ({ret.axis_text}) "
                    f"before returning; the model compiled at {_where(fact.loc, ret.loc.module)} is "
                    f"masked{origin}, and Keras can only apply the mask to a per-token loss, so "
                    f"padding is averaged in (or shapes mismatch); return the (batch, time) loss",
                    "error",
                    None,
                    tuple(sorted(set(related) | set(rel2))),
                )


class PerplexityFromReportedLoss(Rule):
    code = "MSK004"
    name = "perplexity-from-reported-loss"
    summary = "exp() of the loss reported by fit history or evaluate() of a masked model"
    VALID = [
        """
import math
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
model.compile("adam", "sparse_categorical_crossentropy")
history = model.fit(x, y)
ppl = math.exp(history.history["loss"][-1])
""",
        """
import math
history = {"loss": [1.0]}
ppl = math.exp(history["loss"][-1])
""",
    ]
    INVALID = [
        """
import math
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
history = model.fit(x, y, epochs=3)
ppl = math.exp(history.history["loss"][-1])
""",
        """
import numpy as np
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
loss = model.evaluate(x_val, y_val)
print(np.exp(loss))
""",
    ]

    def check(self, an):
        for fact in an.exps:
            model = fact.reported.model
            if not isinstance(model, A.ModelV) or model.output().state != A.MASKED:
                continue
            target = an.target
            pad = target.padding_in_denominator
            origin, related = _mask_origin(model.output(), an)
            if pad is True:
                sev, why = "error", (
                    f"{_version_note(target)} counts padding in the loss denominator and averages "
                    f"batches by sequence count"
                )
            else:
                sev, why = "warning", (
                    f"{_version_note(target)}: the reported epoch loss averages batch means weighted by "
                    f"sequences, not tokens" + ("" if pad is False else " (and on tf.keras < 2.11 padding is in the denominator)")
                )
            yield Raw(
                fact.loc,
                f"perplexity as exp of the reported loss {fact.reported.what} of a masked model{origin}: "
                f"{why}, so this is not token perplexity; compute it from summed token losses and token "
                f"counts (or pytest_maskloss.check_masked_loss)",
                sev,
                None,
                related,
            )


class SampleWeightPaddingWithBatchMean(Rule):
    code = "MSK005"
    name = "padding-sample-weight-with-batch-mean"
    summary = "padding passed as sample_weight to fit/evaluate with a sum_over_batch_size loss"
    VALID = [
        """
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"))
model.fit(x, y, sample_weight=(y != 0).astype("float32"))
""",
        """
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
model.fit(x, y, sample_weight=class_weights_per_example)
""",
    ]
    INVALID = [
        """
# keras-version: 3.7
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
weights = (y != 0).astype("float32")
model.fit(x, y, sample_weight=weights)
""",
        """
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
model.evaluate(x, y, sample_weight=padding_mask)
""",
    ]

    def check(self, an):
        for fact in an.fits:
            if not _looks_like_padding(fact.sample_weight, fact.sw_node):
                continue
            model = fact.model
            stock = None
            if isinstance(model, A.ModelV):
                if model.output().state == A.MASKED:
                    continue  # the mask already divides by real tokens; MSK001 covers old versions
                reductions = []
                for c in model.compiles:
                    for value, node in c.losses:
                        if isinstance(value, A.LossV):
                            reductions.append(value.reduction)
                            if value.kind == "stock" and value.reduction is None and value.call_node is not None and c.loc.module is an:
                                stock = A.Loc(an, c.loc.unit, value.call_node, c.loc.top)
                            if value.kind == "masked":
                                reductions.append("masked")
                if any(r not in (None, "sum_over_batch_size", "auto") for r in reductions):
                    continue
            fix = None
            if stock is not None and an.target.has_mean_with_sample_weight:
                fix = _reduction_fix(stock)
            yield Raw(
                A.Loc(an, fact.loc.unit, fact.sw_node, fact.loc.top),
                f"padding passed as sample_weight to {fact.method}() with a sum_over_batch_size loss: "
                f"the weights zero the padding but the divisor still counts it (every Keras version), "
                f"so the reported loss shrinks with padding; use reduction=\"mean_with_sample_weight\" "
                f"(Keras >= 3.7) or a masked loss",
                "error",
                fix,
            )


def _looks_like_padding(value, node) -> bool:
    if isinstance(value, A.PaddingV):
        return True
    name = S.dotted(node) or ""
    leaf = name.rsplit(".", 1)[-1].lower()
    return any(w in leaf for w in ("mask", "pad", "nonzero", "not_pad"))


def _reduction_fix(loc: A.Loc):
    def build(an):
        call = loc.node
        text = E.code_for(loc)
        if call.args:
            new = text[: text.rstrip().rfind(")")].rstrip()
            if new.endswith(","):
                new += " "
            else:
                new += ", "
            new += 'reduction="mean_with_sample_weight")'
        else:
            new = text.rstrip()[:-1] + 'reduction="mean_with_sample_weight")'
        return (
            'add reduction="mean_with_sample_weight" to the loss (changes the reported value: unsafe)',
            [E.replace_edit(loc, new)],
            False,
        )

    return build


class MaskDroppedByLayer(Rule):
    code = "MSK006"
    name = "mask-dropped-by-layer"
    summary = "a layer without mask support after a mask source drops the mask"
    VALID = [
        """
import keras
model = keras.Sequential([
    keras.layers.Embedding(100, 8, mask_zero=True),
    keras.layers.LSTM(8, return_sequences=True),
    keras.layers.Dense(5),
])
""",
        """
import keras
model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Conv1D(8, 3), keras.layers.Dense(5)])
""",
        """
import keras
inp = keras.Input((None,))
x = keras.layers.Embedding(100, 8, mask_zero=True)(inp)
x = keras.layers.LSTM(8)(x)
x = keras.layers.Reshape((8, 1))(x)
""",
    ]
    INVALID = [
        """
import keras
model = keras.Sequential([
    keras.layers.Embedding(100, 8, mask_zero=True),
    keras.layers.Conv1D(8, 3, padding="same"),
    keras.layers.Dense(5),
])
""",
        """
from tensorflow.keras.layers import Embedding, Lambda, Input
inp = Input((None,))
x = Embedding(100, 8, mask_zero=True)(inp)
x = Lambda(lambda t: t * 2.0)(x)
""",
    ]

    def check(self, an):
        for drop in an.drops.values():
            layer = drop.layer
            origin = ""
            related = ()
            if drop.sources:
                origin = f" from {_source_text(drop.sources[0])} at {_where(drop.sources[0], an)}"
                related = tuple(sorted({s.module.path for s in drop.sources if s.module is not an}))
            what = "Lambda without mask=" if layer.name == "Lambda" else layer.name
            yield Raw(
                layer.loc,
                f"{what} does not support masking: the mask{origin} is dropped here, and layers and "
                f"the loss after it score padding as real tokens (Keras 3 warns, tf.keras and tf_keras "
                f"are silent); move it before the mask source, pool first, or use a layer that "
                f"propagates the mask",
                "error",
                None,
                related,
            )


class ParseError:
    """Not a rule class of the engine: the code given to files that cannot be read or parsed."""

    code = "MSK900"
    name = "parse-error"
    summary = "the file cannot be read or parsed (syntax error, bad encoding, invalid notebook)"
    VALID = ["x = 1\n"]
    INVALID = ["def f(:\n    pass\n"]


RULES: list[Rule] = [
    StockLossOnMaskedOutput(),
    LossSubclassOverridesCall(),
    CustomLossReducesTimeAxis(),
    PerplexityFromReportedLoss(),
    SampleWeightPaddingWithBatchMean(),
    MaskDroppedByLayer(),
]
ALL_RULES = RULES + [ParseError()]
CODES = {r.code: r for r in ALL_RULES}
