"""What the scanner knows about Keras names, without importing Keras.

``canonical`` maps every spelling of a Keras name (``tensorflow.keras.layers.Embedding``,
``tf_keras.layers.Embedding``, ``keras_core.layers.Embedding``,
``keras.src.layers.core.embedding.Embedding``, ``tf.losses.X`` ...) to one ``keras.``-rooted
name; the tables below are keyed by the last component.
"""

from __future__ import annotations

from pytest_maskloss.compat import flavours

# the package the standalone tf_keras flavour is imported from
_TF_KERAS = flavours.MODEL_PACKAGES[flavours.TF_KERAS]

_PREFIXES = (
    ("tensorflow.python.keras.", "keras."),
    ("tensorflow.compat.v1.keras.", "keras."),
    ("tensorflow.compat.v2.keras.", "keras."),
    ("tensorflow.compat.v1.losses.", "keras.losses."),
    ("tensorflow.compat.v2.losses.", "keras.losses."),
    ("tensorflow.keras.", "keras."),
    ("tensorflow.losses.", "keras.losses."),
    ("tf_keras.src.", "keras."),
    ("tf_keras.", "keras."),
    ("keras.src.", "keras."),
    ("keras.api._v2.keras.", "keras."),
    ("keras.api.", "keras."),
    ("keras._tf_keras.keras.", "keras."),
    ("keras_core.", "keras."),  # Keras 3's preview package (keras-core 0.1)
)


_CANONICAL: dict = {}  # qname -> canonical(qname): the same few names are asked again and again


def canonical(qname: str) -> str:
    known = _CANONICAL.get(qname)
    if known is not None:
        return known
    result = qname
    for old, new in _PREFIXES:
        if qname.startswith(old):
            result = new + qname[len(old):]
            break
    else:
        if qname in ("tensorflow.keras", _TF_KERAS, "tensorflow.python.keras", "keras_core"):
            result = "keras"
    if len(_CANONICAL) < 100_000:
        _CANONICAL[qname] = result
    return result


def keras_leaf(qname: str) -> str | None:
    """The last component of a Keras name, or None when ``qname`` is not in Keras."""
    c = canonical(qname)
    if c.startswith("keras."):
        return c.rsplit(".", 1)[1]
    return None


# --- layers -------------------------------------------------------------------------------
MASK_SOURCES = {"Embedding", "Masking"}
RNN_LAYERS = {"LSTM", "GRU", "SimpleRNN", "RNN", "CuDNNLSTM", "CuDNNGRU", "ConvLSTM1D"}
WRAPPERS = {"Bidirectional"}
GLOBAL_POOLING = {
    "GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
}
# Layers that do not support masking: a mask reaching them is silently dropped (tf.keras,
# tf_keras) or dropped with a warning (Keras 3). Padding is then scored as real tokens.
MASK_DROPPERS = {
    "Conv1D", "Convolution1D", "Conv2D", "Convolution2D", "Conv3D", "Conv1DTranspose",
    "Convolution1DTranspose", "SeparableConv1D", "SeparableConvolution1D", "DepthwiseConv1D",
    "LocallyConnected1D", "Flatten", "Reshape", "Permute", "MaxPooling1D", "MaxPool1D",
    "AveragePooling1D", "AvgPool1D", "UpSampling1D", "Cropping1D", "ZeroPadding1D", "Lambda",
}
INPUTS = {"Input", "InputLayer"}
SEQUENTIAL = {"Sequential"}
MODELS = {"Model", "Functional"}
LAYER_BASES = {"Layer"}
LOSS_BASES = {"Loss", "LossFunctionWrapper"}
MERGE_FUNCS = {
    "concatenate", "add", "multiply", "average", "maximum", "minimum", "subtract", "dot",
}
MERGE_LAYERS = {
    "Concatenate", "Add", "Multiply", "Average", "Maximum", "Minimum", "Subtract", "Dot",
}

# --- losses -------------------------------------------------------------------------------
LOSS_CLASSES = {
    "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
    "BinaryFocalCrossentropy", "CategoricalFocalCrossentropy", "MeanSquaredError",
    "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
    "KLDivergence", "Huber", "LogCosh", "Hinge", "SquaredHinge", "CategoricalHinge", "Poisson",
    "CosineSimilarity", "Tversky", "Dice", "CTC", "CircleLoss",
}
LOSS_FUNCTIONS = {
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "binary_focal_crossentropy", "categorical_focal_crossentropy", "mean_squared_error", "mse",
    "MSE", "mean_absolute_error", "mae", "MAE", "mean_absolute_percentage_error", "mape",
    "MAPE", "mean_squared_logarithmic_error", "msle", "MSLE", "kl_divergence", "kld", "KLD",
    "kullback_leibler_divergence", "huber", "huber_loss", "log_cosh", "logcosh", "hinge",
    "squared_hinge", "categorical_hinge", "poisson", "cosine_similarity", "ctc", "dice",
    "tversky",
}
LOSS_STRINGS = LOSS_FUNCTIONS | LOSS_CLASSES
# per-token loss functions outside keras.losses (their result is still per token)
PER_TOKEN_OPS = {
    "sparse_softmax_cross_entropy_with_logits", "softmax_cross_entropy_with_logits",
    "sigmoid_cross_entropy_with_logits", "softmax_cross_entropy_with_logits_v2",
}
REDUCTIONS = {"reduce_mean", "reduce_sum", "mean", "sum"}
EXP_FUNCS = {"exp"}

# --- KerasHub / keras_nlp (read in keras-hub 0.32.0's sources; keras_nlp is its old name) ----
HUB_PACKAGES = ("keras_hub", "keras_nlp")
# layers that make a mask when given mask_zero=True (TokenAndPositionEmbedding sets its token
# embedding's mask on the sum)
HUB_MASK_MAKERS = {"TokenAndPositionEmbedding", "ReversibleEmbedding"}
# supports_masking = True without compute_mask: the output carries the first input's mask
HUB_MASK_PASSERS = {"TransformerEncoder", "TransformerDecoder"}
# a new tensor without a mask (position encodings, the masked-LM head's per-position logits)
HUB_UNMASKED = {"PositionEmbedding", "SinePositionEncoding", "RotaryEmbedding", "MaskedLMHead", "AlibiBias"}
# no mask support: Keras 3 destroys the mask (with a warning)
HUB_MASK_DROPPERS = {"FNetEncoder"}
# MultiHeadAttention and its subclasses clear their inputs' masks (Keras >= 3.8, see
# compat.flavours.attention_clears_input_masks)
ATTENTION_CLEARING = {"MultiHeadAttention", "CachedMultiHeadAttention"}
# KerasHub language-model tasks: compiled by __init__ with a sum_over_batch_size
# SparseCategoricalCrossentropy; their preprocessors pass the padding as sample_weight
HUB_TASKS = ("CausalLM", "MaskedLM", "Seq2SeqLM")


def hub_name(qname: str) -> str | None:
    """The dotted name below the package for a KerasHub / keras_nlp name
    (``keras_nlp.models.GPT2CausalLM.from_preset`` -> ``models.GPT2CausalLM.from_preset``)."""
    for package in HUB_PACKAGES:
        if qname.startswith(package + "."):
            return qname[len(package) + 1:]
    return None


def hub_task(leaf: str) -> str | None:
    """``"CausalLM"`` for ``GPT2CausalLM``, ``"MaskedLM"`` for ``BertMaskedLM``, ..."""
    for kind in HUB_TASKS:
        if leaf.endswith(kind):
            return kind
    return None
