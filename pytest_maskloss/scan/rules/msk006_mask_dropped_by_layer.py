"""MSK006 mask-dropped-by-layer."""

from __future__ import annotations

from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule, source_text, where


class MaskDroppedByLayer(Rule):
    """A layer without mask support, applied after a mask source, drops the mask.

    ## What it does
    Finds, in a Sequential list, an `.add` chain, a functional graph or a subclassed `call`, a
    layer without mask support applied to a masked tensor: `Conv1D`, `Conv2D`, `Conv3D` and
    their transposed, separable and depthwise variants, `Flatten`, `Reshape`, `Permute`, local
    pooling (`MaxPooling1D`, `AveragePooling1D`), `UpSampling1D`, `Cropping1D`,
    `ZeroPadding1D`, `LocallyConnected1D`, a `Lambda` without `mask=`, and keras-hub's
    `FNetEncoder`.

    Two version-dependent droppers as well, each named at the layer to blame:
    - `MultiHeadAttention(...)(x, x)` (and keras-hub's `CachedMultiHeadAttention`) clears the
      mask of the tensors it is given as query, value and key; a later use of such a tensor
      (the residual `Add()([x, attention])`, another layer) sees no mask. The finding is on the
      attention layer, not on the `Add`.
    - A merge layer (`Add`, `Concatenate`, `Multiply`, ... or `keras.layers.add([...])`) with
      one masked and one unmasked input, such as `Add()([token_embedding, position_embedding])`
      with the mask only on the tokens.

    ## Why is this bad?
    The mask is lost there, and every layer after it, the loss included, scores padding as
    real tokens. Keras 3 warns for layers without mask support; tf.keras and tf_keras are
    silent. Attention and merges drop the mask without a warning.

    - `MultiHeadAttention` clears its inputs' masks on Keras 3.8.0 to 3.15.1 (measured: the
      residual `Add` sees no mask and the loss is the unmasked mean); Keras 3.6, tf.keras and
      tf_keras keep them.
    - Keras 3 merges combine masks only when every input has one (3.4 and later; 3.0 to 3.3
      never propagate a mask through a merge): measured on 3.15.1, 2.199188 reported where the
      token mean is 2.198224 (2.199188 is the unmasked mean). tf.keras and tf_keras keep the
      mask.

    Severity: **error** for layers without mask support (every Keras version); for attention
    and merges **error** when the targeted Keras drops the mask, nothing when it keeps it
    (tf.keras, tf_keras, Keras < 3.8 for attention), **warning** when the version is unknown.

    ## Example
    ```python
    model = keras.Sequential([
        keras.layers.Embedding(100, 8, mask_zero=True),
        keras.layers.Conv1D(8, 3, padding="same"),
        keras.layers.Dense(5),
    ])
    ```

    ## Use instead
    ```python
    model = keras.Sequential([
        keras.layers.Embedding(100, 8, mask_zero=True),
        keras.layers.LSTM(8, return_sequences=True),  # or move the Conv1D before the mask source
        keras.layers.Dense(5),
    ])
    ```
    """

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
        """
# keras-version: 3.6
import keras
inp = keras.Input((None,), dtype="int32")
e = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
a = keras.layers.MultiHeadAttention(2, 8)(e, e)
x = keras.layers.Add()([e, a])
""",
        """
# keras-version: 2.15
import tensorflow as tf
inp = tf.keras.Input((None,), dtype="int32")
tokens = tf.keras.layers.Embedding(100, 16, mask_zero=True)(inp)
positions = tf.keras.layers.Embedding(32, 16)(tf.range(32))
x = tf.keras.layers.Add()([tokens, positions])
""",
        """
# keras-version: 3.15
import keras
inp = keras.Input((None,), dtype="int32")
e = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
x = keras.layers.MultiHeadAttention(2, 8)(e, e)
x = keras.layers.Dense(5)(x)
""",
    ]
    INVALID = [
        Invalid(
            code="""
import keras
model = keras.Sequential([
    keras.layers.Embedding(100, 8, mask_zero=True),
    keras.layers.Conv1D(8, 3, padding="same"),
    keras.layers.Dense(5),
])
""",
            fixed="""
import keras
model = keras.Sequential([
    keras.layers.Embedding(100, 8, mask_zero=True),
    keras.layers.LSTM(8, return_sequences=True),
    keras.layers.Dense(5),
])
""",
        ),
        Invalid(
            code="""
from tensorflow.keras.layers import Embedding, Lambda, Input
inp = Input((None,))
x = Embedding(100, 8, mask_zero=True)(inp)
x = Lambda(lambda t: t * 2.0)(x)
""",
            fixed="""
from tensorflow.keras.layers import Embedding, Lambda, Input
inp = Input((None,))
x = Embedding(100, 8, mask_zero=True)(inp)
x = Lambda(lambda t: t * 2.0, mask=lambda t, m: m)(x)
""",
        ),
        Invalid(  # the attention layer is named, not the Add
            code="""
# keras-version: 3.15
import keras
inp = keras.Input((None,), dtype="int32")
e = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
a = keras.layers.MultiHeadAttention(2, 8)(e, e)
x = keras.layers.Add()([e, a])
""",
            fixed="""
# keras-version: 3.15
import keras
inp = keras.Input((None,), dtype="int32")
e = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
a = keras.layers.MultiHeadAttention(2, 8)(e, e)
x = keras.layers.Dense(16)(a)
""",
        ),
        Invalid(
            code="""
import keras
import keras_hub
inp = keras.Input((None,), dtype="int32")
tokens = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
positions = keras_hub.layers.PositionEmbedding(32)(tokens)
x = keras.layers.Add()([tokens, positions])
""",
            fixed="""
import keras
import keras_hub
inp = keras.Input((None,), dtype="int32")
x = keras_hub.layers.TokenAndPositionEmbedding(100, 32, 16, mask_zero=True)(inp)
""",
        ),
    ]

    def check(self, an):
        target = an.target
        for drop in an.drops.values():
            layer = drop.layer
            origin = ""
            related = ()
            if drop.sources:
                origin = f" from {source_text(drop.sources[0])} at {where(drop.sources[0], an)}"
                related = tuple(sorted({s.module.path for s in drop.sources if s.module is not an}))
            if drop.reason == "attention":
                known = target.attention_clears_input_masks
                message = (
                    f"{layer.name} clears the mask of the tensors it is given as query, value and key "
                    f"({'on ' + target.describe() if known else 'Keras 3.8 and later; ' + target.describe()}): "
                    f"the mask{origin} is lost where such a tensor is used again (a residual Add, another "
                    f"layer), and the loss after it scores padding as real tokens; add the residual to a "
                    f"tensor taken before the attention call, or pass the mask explicitly"
                )
            elif drop.reason == "merge":
                known = target.merge_drops_mask_of_partly_masked_inputs
                message = (
                    f"{layer.name} merges a masked input with an unmasked one: Keras 3 keeps a mask only "
                    f"when every input has one ({target.describe() if known else target.describe() + '; tf.keras and tf_keras keep it'}), "
                    f"so the mask{origin} is dropped here and the loss after it scores padding as real "
                    f"tokens; mask every input (e.g. keras-hub's TokenAndPositionEmbedding) or set the "
                    f"mask on the sum"
                )
            else:
                known = True
                what = "Lambda without mask=" if layer.name == "Lambda" else layer.name
                message = (
                    f"{what} does not support masking: the mask{origin} is dropped here, and layers and "
                    f"the loss after it score padding as real tokens (Keras 3 warns, tf.keras and tf_keras "
                    f"are silent); move it before the mask source, pool first, or use a layer that "
                    f"propagates the mask"
                )
            yield Raw(layer.loc, message, "error" if known else "warning", None, related)
