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
    `ZeroPadding1D`, `LocallyConnected1D`, and a `Lambda` without `mask=`.

    ## Why is this bad?
    The mask is lost there, and every layer after it, the loss included, scores padding as
    real tokens. Keras 3 warns; tf.keras and tf_keras are silent.

    Severity: **error** on every Keras version.

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
    ]

    def check(self, an):
        for drop in an.drops.values():
            layer = drop.layer
            origin = ""
            related = ()
            if drop.sources:
                origin = f" from {source_text(drop.sources[0])} at {where(drop.sources[0], an)}"
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
