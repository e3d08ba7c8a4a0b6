"""MSK001 stock-loss-on-masked-output."""

from __future__ import annotations

from pytest_maskloss.scan import edits
from pytest_maskloss.scan import kerasnames as K
from pytest_maskloss.scan.rules.base import MASKED_LOSS, Invalid, Raw, Rule, make_fix, mask_origin
from pytest_maskloss.scan.values import MASKED, Const, Loc, LossV, Qual, Str


class StockLossOnMaskedOutput(Rule):
    """A stock Keras loss compiled on a model whose output carries a padding mask.

    ## What it does
    Finds `compile` calls whose loss is a stock Keras loss (a string such as
    `"sparse_categorical_crossentropy"` or `"mse"`, a `keras.losses` class instance, or a loss
    function object; given directly, through a variable, in a list or in a dict) on a model
    whose padding mask reaches the output. The mask comes from `Embedding(mask_zero=True)`
    (by keyword, or positionally: 6th argument in Keras 3, 7th in Keras 2 and tf_keras), from
    any other layer given `mask_zero=` (keras-hub's `TokenAndPositionEmbedding`, ...), from
    `Masking`, or from a project layer with a `compute_mask` method.

    A mask consumed before the output ends it, and then nothing is reported: an `LSTM` or
    `GRU` without `return_sequences=True` (or a `Bidirectional` of one), global pooling, a
    slice such as `x[:, -1]`. Losses with `reduction="sum"` or `"none"` and the losses of
    `pytest_maskloss.keras` are not reported. KerasHub's `TokenAndPositionEmbedding` and
    `ReversibleEmbedding` make a mask with `mask_zero=True`, its `TransformerEncoder` and
    `TransformerDecoder` pass it on, and a project layer with `supports_masking = True` (or a
    `compute_mask`) passes it on too.

    ## Why is this bad?
    On tf.keras before 2.11 the mask zeroes the padded terms, but the default reduction still
    divides by every position, padding included: the reported loss (and `exp(loss)`) shrinks
    as padding grows. In the reference case (3 real tokens of 5, uniform predictions over 5
    classes) it reports 0.9657 instead of 1.6094. From 2.11 on (and on tf_keras and Keras 3)
    each batch is right, but the epoch loss of `fit` and `evaluate` averages batch means
    weighted by sequences, not by tokens.

    `SparseCategoricalCrossentropy(ignore_class=0)` (the padding label) is exact per batch on
    tf.keras 2.10 too: the loss rescales by its own mask (measured 2.2019911, the
    batch-weighted mean of masked batch means, where the stock loss reports 1.3765111), so it
    gets the note there, not the error.

    Severity: **error** when the project targets tf.keras < 2.11 (except `ignore_class=0` on
    2.10); **note** (epoch
    aggregation only) on tf.keras ≥ 2.11, tf_keras and Keras 3; **warning** when the Keras
    version is unknown (the message says so).

    ## Example
    ```python
    model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
    model.compile("adam", "sparse_categorical_crossentropy")
    ```

    ## Use instead
    ```python
    import pytest_maskloss.keras
    model.compile("adam", pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
    ```

    ## Fix safety
    The fix wraps the loss in `pytest_maskloss.keras.MaskedLoss(...)` and adds
    `import pytest_maskloss.keras`. It is unsafe: the reported value changes (that is its
    point). Notes get no fix.
    """

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
        Invalid(  # ignore_class=0 on tf.keras 2.10: exact per batch, only the epoch note
            code="""
# keras-version: 2.10
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(ignore_class=0))
""",
            fixed="""
# keras-version: 2.10
import pytest_maskloss.keras
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
model.compile("adam", pytest_maskloss.keras.MaskedSparseCategoricalCrossentropy(ignore_class=0))
""",
        ),
        Invalid(
            code="""
# keras-version: 2.10
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
            fixed="""
# keras-version: 2.10
import pytest_maskloss.keras
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
model.compile("adam", pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
""",
        ),
        Invalid(
            code="""
from tensorflow.keras import layers as L
from tensorflow import keras
inp = keras.Input((None,))
x = L.Embedding(100, 8, mask_zero=True)(inp)
x = L.LSTM(8, return_sequences=True)(x)
out = L.Dense(5)(x)
model = keras.Model(inputs=inp, outputs=out)
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
            fixed="""
import pytest_maskloss.keras
from tensorflow.keras import layers as L
from tensorflow import keras
inp = keras.Input((None,))
x = L.Embedding(100, 8, mask_zero=True)(inp)
x = L.LSTM(8, return_sequences=True)(x)
out = L.Dense(5)(x)
model = keras.Model(inputs=inp, outputs=out)
model.compile(optimizer="adam", loss=pytest_maskloss.keras.MaskedLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
""",
        ),
        Invalid(
            code="""
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
            fixed="""
import pytest_maskloss.keras
import tensorflow as tf
layers = tf.keras.layers
def build_model():
    model = tf.keras.Sequential()
    model.add(layers.Masking(0.0))
    model.add(layers.Dense(5))
    return model
model = build_model()
model.compile(loss=pytest_maskloss.keras.MaskedLoss(tf.keras.losses.sparse_categorical_crossentropy))
""",
        ),
        Invalid(
            code="""
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
            fixed="""
import pytest_maskloss.keras
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
model.compile("adam", {"tags": pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy")})
""",
        ),
        Invalid(
            code="""
# keras-version: 2.10
from keras.layers import Embedding, Dense
from keras.models import Sequential
model = Sequential([Embedding(100, 8, None, None, None, None, True), Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
            fixed="""
# keras-version: 2.10
import pytest_maskloss.keras
from keras.layers import Embedding, Dense
from keras.models import Sequential
model = Sequential([Embedding(100, 8, None, None, None, None, True), Dense(5)])
model.compile("adam", pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
""",
        ),
        Invalid(  # a note (epoch aggregation): no fix; the correction by hand
            code="""
# keras-version: 3.7
import keras
model = keras.Sequential([keras.layers.Embedding(100, 8, mask_zero=True), keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
""",
            fixed="""
# keras-version: 3.7
import keras
import pytest_maskloss.keras
model = keras.Sequential([keras.layers.Embedding(100, 8, mask_zero=True), keras.layers.Dense(5)])
model.compile("adam", pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
""",
        ),
    ]

    def check(self, an):
        target = an.target
        for fact in an.compiles:
            t = fact.model.output()
            if t.state != MASKED:
                continue
            origin, related = mask_origin(t, an)
            if fact.model.loc.module is not an:
                related = tuple(sorted(set(related) | {fact.model.loc.module.path}))
            for value, node in fact.losses:
                name = _stock_name(value)
                if name is None:
                    continue
                loc = Loc(an, fact.loc.unit, node, fact.loc.top)
                pad = target.padding_in_denominator
                if pad is True and _ignores_padding(value) and target.ignore_class_divides_by_real_tokens:
                    pad = False  # the loss rescales by its own ignore_class mask (tf.keras 2.10)
                if pad is True:
                    sev = "error"
                    msg = (
                        f"stock loss {name} on a masked model{origin}: {target.describe()} divides "
                        f"the masked loss by every position, padding included, so the reported loss "
                        f"and exp(loss) shrink as padding grows; use {MASKED_LOSS}(...) "
                        f"(or a loss that divides by the mask sum)"
                    )
                elif pad is False:
                    sev = "note"
                    msg = (
                        f"stock loss {name} on a masked model{origin}: per-batch loss is right on "
                        f"{target.describe()}, but the epoch loss of fit/evaluate averages batch "
                        f"means weighted by sequences, not tokens (not a token mean when batches hold "
                        f"different numbers of real tokens)"
                    )
                else:
                    sev = "warning"
                    msg = (
                        f"stock loss {name} on a masked model{origin}: {target.describe()}; on "
                        f"tf.keras < 2.11 the reported loss counts padding in the denominator (later "
                        f"versions: epoch loss weighted by sequences); set [tool.maskloss] "
                        f"keras-version or pin tensorflow/keras to decide"
                    )
                fix = None if sev == "note" else _wrap_fix(an, loc)
                yield Raw(loc, msg, sev, fix, related)


def _ignores_padding(value) -> bool:
    """A stock loss given ``ignore_class=0`` (the label ``mask_zero`` pads with), or a value the
    scanner cannot read."""
    ignore = value.ignore_class if isinstance(value, LossV) else None
    return ignore == "?" or (isinstance(ignore, Const) and ignore.value == 0)


def _stock_name(value) -> str | None:
    """How a message names a stock loss; None when ``value`` is not one (or sums/none)."""
    if isinstance(value, Str) and value.value in K.LOSS_STRINGS:
        return repr(value.value)
    if isinstance(value, LossV) and value.kind == "stock":
        if value.reduction in ("sum", "none"):
            return None
        return f"{value.name}()"
    if isinstance(value, Qual):
        leaves = value.keras_leaves() & (K.LOSS_FUNCTIONS | K.LOSS_CLASSES)
        if leaves:
            return sorted(leaves)[0]
    return None


def _wrap_fix(an, loc: Loc):
    return make_fix(
        f"wrap the loss in {MASKED_LOSS}(...) (changes the reported value: unsafe)",
        lambda: [edits.replace_edit(loc, f"{MASKED_LOSS}({edits.code_for(loc)})")]
        + edits.import_edits(an, "pytest_maskloss.keras"),
    )
