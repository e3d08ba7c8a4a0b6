"""MSK004 perplexity-from-reported-loss."""

from __future__ import annotations

from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule, mask_origin
from pytest_maskloss.scan.values import MASKED, ModelV


class PerplexityFromReportedLoss(Rule):
    """`exp()` of the loss that `fit` history or `evaluate()` reports for a masked model.

    ## What it does
    Finds `exp(...)` (`math`, numpy, TensorFlow, `keras.ops`, torch, jax) of
    `history.history["loss"]` or `["val_loss"]` (any element, or `.get("loss")`) of a `fit`
    on a masked model, or of the value `evaluate()` returns (or its `[0]` or `["loss"]`).

    ## Why is this bad?
    The reported epoch loss is a mean of batch means weighted by sequences, not by tokens, and
    on tf.keras before 2.11 it also counts padding in the denominator: its exponential is not
    the token perplexity.

    Severity: **error** when the project targets tf.keras < 2.11, **warning** otherwise.

    ## Example
    ```python
    history = model.fit(x, y, epochs=3)
    ppl = math.exp(history.history["loss"][-1])
    ```

    ## Use instead
    ```python
    # sum the token losses and count the real tokens, or check the figure at test time:
    pytest_maskloss.check_masked_loss(model, x, y)
    ```
    """

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
        Invalid(
            code="""
import math
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
history = model.fit(x, y, epochs=3)
ppl = math.exp(history.history["loss"][-1])
""",
            fixed="""
import math
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
history = model.fit(x, y, epochs=3)
ppl = math.exp(token_loss_sum / token_count)
""",
        ),
        Invalid(
            code="""
import numpy as np
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
loss = model.evaluate(x_val, y_val)
print(np.exp(loss))
""",
            fixed="""
import numpy as np
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
loss = model.evaluate(x_val, y_val)
print(np.exp(token_loss_sum / token_count))
""",
        ),
    ]

    def check(self, an):
        for fact in an.exps:
            model = fact.reported.model
            if not isinstance(model, ModelV) or model.output().state != MASKED:
                continue
            target = an.target
            pad = target.padding_in_denominator
            origin, related = mask_origin(model.output(), an)
            if pad is True:
                sev, why = "error", (
                    f"{target.describe()} counts padding in the loss denominator and averages "
                    f"batches by sequence count"
                )
            else:
                sev, why = "warning", (
                    f"{target.describe()}: the reported epoch loss averages batch means weighted by "
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
