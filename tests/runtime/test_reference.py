"""The numpy reference against Keras' own per-element losses on the stack under test.

Every expected value is computed here by Keras (Loss objects with ``reduction="none"``, the
same wrapper compile() builds), never taken from the reference itself. The module runs on
Keras 3 (TensorFlow, JAX or PyTorch backend), tf_keras (TF_USE_LEGACY_KERAS=1) and tf.keras 2.10.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from stack import STACK, TF_BACKEND, keras, to_numpy

from pytest_maskloss.reference import (
    FLAVOURS,
    activation_unwrapped_by_keras,
    LossSpec,
    detect_flavour,
    per_token_loss,
    resolve_loss_spec,
    supported_losses,
    valid_token_mask,
)

RTOL = 1e-5
ATOL = 1e-6


K, FLAVOUR = keras, STACK
IS_KERAS3 = FLAVOUR.startswith("keras3-")


def as_model_tensors(*arrays):
    """Arrays as a model hands them to its loss: Keras 2's Loss wrapper aligns ranks only
    for tensors, not for numpy arrays."""
    if IS_KERAS3:
        return arrays
    import tensorflow as tf

    return tuple(tf.convert_to_tensor(a) for a in arrays)


def keras_per_token(loss_class: str, y_true, y_pred, **options) -> np.ndarray:
    loss = getattr(K.losses, loss_class)(reduction="none", **options)
    return to_numpy(loss(*as_model_tensors(y_true, y_pred)))


def float32_sum_atol(vocabulary: int) -> float:
    """Absolute tolerance for a loss that sums ``vocabulary`` float32 terms near 1.

    Keras sums in float32; TensorFlow's Eigen reduction accumulates each of 16 lanes
    sequentially, so a row that is (almost) one-hot adds ~V/16 tiny terms to ~1, each add
    rounding by up to half an ulp (2**-24). The reference sums in float64 and is the more
    exact of the two; measured: 1.2e-6 at V = 2000 for a one-hot row.
    """
    return ATOL + 2.0**-24 * vocabulary / 16


def assert_matches_keras(reference: np.ndarray, expected: np.ndarray, vocabulary: int = 0):
    assert reference.shape == expected.shape
    np.testing.assert_allclose(
        reference, expected, rtol=RTOL, atol=float32_sum_atol(vocabulary)
    )


# ------------------------------------------------------------------------------------
# Inputs: random probabilities with the extremes Keras clips (exact 0 and 1)
# ------------------------------------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def extreme_probabilities(rng, shape, labels):
    """Softmax rows, plus rows that are exactly one-hot on the label, exactly one-hot off
    the label (the label's probability is 0), and rows with many exact zeros."""
    logits = (rng.normal(size=shape) * 3).astype(np.float32)
    probs = softmax(logits)
    flat = probs.reshape(-1, shape[-1])
    flat_labels = labels.reshape(-1)
    vocabulary = shape[-1]
    flat[0] = 0.0
    flat[0, flat_labels[0]] = 1.0
    flat[1] = 0.0
    flat[1, (flat_labels[1] + 1) % vocabulary] = 1.0
    flat[2, flat_labels[2]] = 0.0
    flat[3, : vocabulary // 2] = 0.0
    return logits, probs


SHAPES = [(2, 5, 7), (3, 4, 300)]


@pytest.fixture(params=SHAPES, ids=lambda s: "x".join(map(str, s)))
def shape(request):
    return request.param


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


# ------------------------------------------------------------------------------------
# Sparse and categorical cross-entropy
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("label_rank", ["BT", "BT1"])
def test_sparse_categorical_crossentropy(rng, shape, from_logits, label_rank):
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    logits, probs = extreme_probabilities(rng, shape, labels)
    y_pred = logits if from_logits else probs
    y_true = labels if label_rank == "BT" else labels[..., None]
    expected = keras_per_token(
        "SparseCategoricalCrossentropy", y_true, y_pred, from_logits=from_logits
    )
    spec = LossSpec("sparse_categorical_crossentropy", from_logits=from_logits)
    assert_matches_keras(
        per_token_loss(spec, y_true, y_pred, flavour=FLAVOUR), expected, vocabulary=shape[-1]
    )


def test_sparse_flavour_matters_for_exact_zeros(rng):
    """The per-stack handling of clipped probabilities is measurable, not cosmetic: with a
    vocabulary of 2000 and one-hot rows, renormalising by the clipped sum moves the loss by
    about 2e-4, and the other flavour's formula misses Keras here."""
    shape = (2, 3, 2000)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    _, probs = extreme_probabilities(rng, shape, labels)
    expected = keras_per_token("SparseCategoricalCrossentropy", labels, probs)
    spec = LossSpec("sparse_categorical_crossentropy")
    other = "keras3-jax" if TF_BACKEND else "keras3-tensorflow"
    assert_matches_keras(
        per_token_loss(spec, labels, probs, flavour=FLAVOUR), expected, vocabulary=shape[-1]
    )
    wrong = per_token_loss(spec, labels, probs, flavour=other)
    assert not np.allclose(wrong, expected, rtol=RTOL, atol=float32_sum_atol(shape[-1]))


def test_sparse_ignore_class(rng):
    shape = (2, 6, 9)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    labels[:, -2:] = -1
    _, probs = extreme_probabilities(rng, shape, np.where(labels < 0, 0, labels))
    try:
        expected = keras_per_token(
            "SparseCategoricalCrossentropy", labels, probs, ignore_class=-1
        )
    except TypeError as error:  # pragma: no cover - stacks before ignore_class
        pytest.skip(f"ignore_class not supported here: {error}")
    spec = LossSpec("sparse_categorical_crossentropy", ignore_class=-1)
    assert_matches_keras(per_token_loss(spec, labels, probs, flavour=FLAVOUR), expected)
    np.testing.assert_array_equal(valid_token_mask(spec, labels), labels != -1)
    np.testing.assert_array_equal(valid_token_mask(spec, labels[..., None]), labels != -1)
    np.testing.assert_array_equal(
        valid_token_mask(spec, labels[:, :1], prediction_ndim=3), labels[:, :1] != -1
    )
    assert valid_token_mask(LossSpec("sparse_categorical_crossentropy"), labels) is None


def test_sparse_labels_out_of_range_are_rejected():
    spec = LossSpec("sparse_categorical_crossentropy")
    probs = np.full((1, 2, 3), 1 / 3, dtype=np.float32)
    with pytest.raises(ValueError, match="must lie in"):
        per_token_loss(spec, np.array([[0, 3]]), probs, flavour=FLAVOUR)


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_categorical_crossentropy(rng, shape, from_logits, label_smoothing):
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    logits, probs = extreme_probabilities(rng, shape, labels)
    # Unnormalised rows: Keras divides by the row sum before clipping.
    probs[-1, -1] *= 3.0
    y_true = np.eye(shape[-1], dtype=np.float32)[labels]
    y_pred = logits if from_logits else probs
    expected = keras_per_token(
        "CategoricalCrossentropy",
        y_true,
        y_pred,
        from_logits=from_logits,
        label_smoothing=label_smoothing,
    )
    spec = LossSpec(
        "categorical_crossentropy", from_logits=from_logits, label_smoothing=label_smoothing
    )
    assert_matches_keras(
        per_token_loss(spec, y_true, y_pred, flavour=FLAVOUR), expected, vocabulary=shape[-1]
    )


# ------------------------------------------------------------------------------------
# Binary cross-entropy and element-wise losses
# ------------------------------------------------------------------------------------


def binary_inputs(rng, shape):
    y_true = rng.integers(0, 2, size=shape).astype(np.float32)
    logits = (rng.normal(size=shape) * 4).astype(np.float32)
    probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
    flat, flat_true = probs.reshape(-1), y_true.reshape(-1)
    flat[:4] = [0.0, 1.0, 0.0, 1.0]
    flat_true[:4] = [0.0, 1.0, 1.0, 0.0]  # exactly right, then exactly wrong
    return y_true, logits, probs


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(2, 5, 1), (2, 5, 3)], ids=["BT1", "BT3"])
def test_binary_crossentropy(rng, shape, from_logits, label_smoothing):
    y_true, logits, probs = binary_inputs(rng, shape)
    y_pred = logits if from_logits else probs
    expected = keras_per_token(
        "BinaryCrossentropy",
        y_true,
        y_pred,
        from_logits=from_logits,
        label_smoothing=label_smoothing,
    )
    spec = LossSpec(
        "binary_crossentropy", from_logits=from_logits, label_smoothing=label_smoothing
    )
    assert_matches_keras(per_token_loss(spec, y_true, y_pred, flavour=FLAVOUR), expected)


def test_binary_labels_without_trailing_axis_follow_keras_rank_alignment(rng):
    """Labels (B, T) against predictions (B, T, 1): Keras squeezes the predictions and the
    loss then averages over T (per-sequence values); the reference does the same."""
    y_true, _, probs = binary_inputs(rng, (2, 5, 1))
    expected = keras_per_token("BinaryCrossentropy", y_true[..., 0], probs)
    reference = per_token_loss(
        LossSpec("binary_crossentropy"), y_true[..., 0], probs, flavour=FLAVOUR
    )
    assert_matches_keras(reference, expected)


ELEMENTWISE = {
    "mean_squared_error": ("MeanSquaredError", {}),
    "mean_absolute_error": ("MeanAbsoluteError", {}),
    "mean_absolute_percentage_error": ("MeanAbsolutePercentageError", {}),
    "mean_squared_logarithmic_error": ("MeanSquaredLogarithmicError", {}),
    "huber": ("Huber", {"delta": 0.7}),
    "log_cosh": ("LogCosh", {}),
    "poisson": ("Poisson", {}),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("shape", [(2, 5, 1), (2, 5, 4)], ids=["BT1", "BT4"])
def test_elementwise_losses(rng, name, shape):
    loss_class, options = ELEMENTWISE[name]
    y_true = (rng.normal(size=shape) * 2).astype(np.float32)
    y_pred = (rng.normal(size=shape) * 2).astype(np.float32)
    if name in ("mean_squared_logarithmic_error", "poisson"):
        y_true, y_pred = np.abs(y_true), np.abs(y_pred)
        y_pred.reshape(-1)[0] = 0.0
    if name == "log_cosh":
        y_pred.reshape(-1)[0] = 60.0  # far in the linear regime
    y_true.reshape(-1)[1] = 0.0
    expected = keras_per_token(loss_class, y_true, y_pred, **options)
    spec = LossSpec(name, **options)
    assert_matches_keras(per_token_loss(spec, y_true, y_pred, flavour=FLAVOUR), expected)


def test_kl_divergence(rng, shape):
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    _, probs = extreme_probabilities(rng, shape, labels)
    y_true = softmax(rng.normal(size=shape))
    y_true.reshape(-1, shape[-1])[0] = np.eye(shape[-1], dtype=np.float32)[1]
    expected = keras_per_token("KLDivergence", y_true, probs)
    assert_matches_keras(
        per_token_loss(LossSpec("kl_divergence"), y_true, probs, flavour=FLAVOUR), expected
    )


@pytest.mark.parametrize("kind", ["sparse", "categorical", "binary"])
def test_auto_crossentropy_picks_the_loss_from_shapes(rng, kind):
    if not IS_KERAS3:
        pytest.skip('compile(loss="crossentropy") is a Keras 3 feature')
    from keras.src.trainers.compile_utils import get_loss

    shape = (2, 4, 1) if kind == "binary" else (2, 4, 6)
    labels = rng.integers(0, shape[-1] if kind != "binary" else 2, size=shape[:-1])
    _, probs = extreme_probabilities(rng, shape, labels) if kind != "binary" else (
        None,
        rng.uniform(size=shape).astype(np.float32),
    )
    y_true = {
        "sparse": labels,
        "categorical": np.eye(shape[-1], dtype=np.float32)[labels] if kind != "binary" else None,
        "binary": labels[..., None].astype(np.float32),
    }[kind]
    loss = get_loss("crossentropy", y_true, probs)
    loss.reduction = "none"
    expected = to_numpy(loss(y_true, probs))
    spec = resolve_loss_spec("crossentropy")
    assert_matches_keras(per_token_loss(spec, y_true, probs, flavour=FLAVOUR), expected)


def test_float64_inputs_use_float64_clip_bounds(rng):
    labels = rng.integers(0, 5, size=(2, 3))
    _, probs = extreme_probabilities(rng, (2, 3, 5), labels)
    probs64 = probs.astype(np.float64)
    # Loss objects cast to float32; the bare loss function keeps the input's dtype (except
    # JAX without x64, which computes in float32 and so gets float32 bounds).
    expected = to_numpy(K.losses.sparse_categorical_crossentropy(labels, probs64))
    spec = LossSpec("sparse_categorical_crossentropy")
    reference = per_token_loss(spec, labels, probs64, flavour=FLAVOUR)
    tolerance = 1e-12 if expected.dtype == np.float64 else ATOL
    np.testing.assert_allclose(reference, expected, rtol=tolerance, atol=tolerance)


# ------------------------------------------------------------------------------------
# Flavour
# ------------------------------------------------------------------------------------


def test_detect_flavour_names_this_stack():
    assert detect_flavour() == FLAVOUR


def test_unknown_flavour_is_rejected():
    with pytest.raises(ValueError, match="unknown flavour"):
        per_token_loss(LossSpec("mean_squared_error"), [[1.0]], [[1.0]], flavour="keras4")


def test_flavours_are_documented():
    assert FLAVOUR in FLAVOURS


# ------------------------------------------------------------------------------------
# resolve_loss_spec
# ------------------------------------------------------------------------------------

STRING_ALIASES = [
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "bce",
    "BCE",
    "mean_squared_error",
    "mse",
    "MSE",
    "mean_absolute_error",
    "mae",
    "MAE",
    "mape",
    "msle",
    "huber",
    "huber_loss",
    "log_cosh",
    "logcosh",
    "kl_divergence",
    "kld",
    "KLD",
    "kullback_leibler_divergence",
    "poisson",
    "SparseCategoricalCrossentropy",
    "MeanSquaredError",
    "Huber",
]


def keras_resolves(identifier):
    try:
        return K.losses.get(identifier)
    except (ValueError, TypeError) as error:
        pytest.skip(f"{identifier!r} is not a loss identifier on this stack: {error}")


@pytest.mark.parametrize("identifier", STRING_ALIASES)
def test_resolve_string_agrees_with_what_keras_resolves(identifier):
    """The string resolves to the same loss as the object Keras itself gets for it."""
    resolved_by_keras = resolve_loss_spec(keras_resolves(identifier))
    spec = resolve_loss_spec(identifier)
    assert spec is not None and resolved_by_keras is not None
    assert spec.name == resolved_by_keras.name
    assert spec.reduction is None
    assert identifier in spec.source


@pytest.mark.parametrize("identifier", ["crossentropy", "ce"])
def test_resolve_auto_crossentropy(identifier):
    assert resolve_loss_spec(identifier).name == "crossentropy"


@pytest.mark.parametrize(
    "function_name",
    [
        "sparse_categorical_crossentropy",
        "categorical_crossentropy",
        "binary_crossentropy",
        "mean_squared_error",
        "mse",
        "mae",
        "huber",
        "log_cosh",
        "logcosh",
        "kl_divergence",
        "kld",
        "poisson",
    ],
)
def test_resolve_keras_functions(function_name):
    function = getattr(K.losses, function_name, None)
    if function is None:
        pytest.skip(f"keras.losses.{function_name} does not exist on this stack")
    spec = resolve_loss_spec(function)
    assert spec is not None
    # The function's own per-element values are the check that the name is right.
    rng = np.random.default_rng(3)
    if spec.name == "sparse_categorical_crossentropy":
        y_true = rng.integers(0, 4, size=(2, 3))
    else:
        y_true = rng.uniform(size=(2, 3, 4)).astype(np.float32)
    y_pred = softmax(rng.normal(size=(2, 3, 4)))
    expected = to_numpy(function(y_true, y_pred))
    assert_matches_keras(per_token_loss(spec, y_true, y_pred, flavour=FLAVOUR), expected)


STOCK_OBJECTS = [
    ("SparseCategoricalCrossentropy", {"from_logits": True}),
    ("SparseCategoricalCrossentropy", {"from_logits": False, "ignore_class": 0}),
    ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.1}),
    ("BinaryCrossentropy", {"label_smoothing": 0.2}),
    ("Huber", {"delta": 0.5}),
    ("MeanSquaredError", {}),
    ("KLDivergence", {}),
]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
@pytest.mark.parametrize("loss_class,options", STOCK_OBJECTS)
def test_resolve_stock_loss_objects(loss_class, options, reduction):
    loss = getattr(K.losses, loss_class)(reduction=reduction, **options)
    spec = resolve_loss_spec(loss)
    assert spec is not None
    for key, value in options.items():
        assert getattr(spec, key) == value, key
    assert spec.reduction == reduction
    assert not spec.is_subclass and not spec.overrides_call and not spec.overrides___call__
    assert loss_class in spec.source


@pytest.mark.parametrize("loss_class,options", STOCK_OBJECTS)
def test_resolved_stock_objects_reproduce_their_values(rng, loss_class, options):
    loss = getattr(K.losses, loss_class)(reduction="none", **options)
    spec = resolve_loss_spec(loss)
    shape = (2, 4, 6)
    labels = rng.integers(1, shape[-1], size=shape[:-1])
    labels[0, 0] = 0
    logits, probs = extreme_probabilities(rng, shape, labels)
    y_pred = logits if spec.from_logits else probs
    if spec.name == "sparse_categorical_crossentropy":
        y_true = labels
    elif spec.name == "binary_crossentropy":
        y_true = rng.integers(0, 2, size=shape).astype(np.float32)
    else:
        y_true = np.eye(shape[-1], dtype=np.float32)[labels]
    expected = to_numpy(loss(*as_model_tensors(y_true, y_pred)))
    assert_matches_keras(per_token_loss(spec, y_true, y_pred, flavour=FLAVOUR), expected)


def test_resolve_mean_with_sample_weight_reduction():
    try:
        loss = K.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
    except ValueError as error:
        pytest.skip(f"mean_with_sample_weight not available: {error}")
    assert resolve_loss_spec(loss).reduction == "mean_with_sample_weight"


def test_resolve_auto_reduction():
    try:
        loss = K.losses.MeanSquaredError(reduction="auto")
    except ValueError as error:
        pytest.skip(f"reduction='auto' not available: {error}")
    assert resolve_loss_spec(loss).reduction == "auto"


def test_resolve_stock_class_itself():
    spec = resolve_loss_spec(K.losses.SparseCategoricalCrossentropy)
    assert spec.name == "sparse_categorical_crossentropy" and not spec.from_logits


def test_resolve_subclass_overriding_call():
    base = K.losses.SparseCategoricalCrossentropy

    class SmoothedLoss(base):
        def call(self, y_true, y_pred):
            return super().call(y_true, y_pred)

    spec = resolve_loss_spec(SmoothedLoss(from_logits=True))
    assert spec.name == "sparse_categorical_crossentropy" and spec.from_logits
    assert spec.is_subclass and spec.overrides_call and not spec.overrides___call__
    assert "SmoothedLoss" in spec.source and "SparseCategoricalCrossentropy" in spec.source


def test_resolve_subclass_overriding_dunder_call_through_an_intermediate_class():
    class Intermediate(K.losses.CategoricalCrossentropy):
        def __call__(self, y_true, y_pred, sample_weight=None):
            return super().__call__(y_true, y_pred, sample_weight)

    class Leaf(Intermediate):
        pass

    spec = resolve_loss_spec(Leaf(label_smoothing=0.1))
    assert spec.name == "categorical_crossentropy" and spec.label_smoothing == 0.1
    assert spec.is_subclass and spec.overrides___call__ and not spec.overrides_call


def test_resolve_subclass_wrapping_another_function_is_unknown():
    class Disguised(K.losses.MeanSquaredError):
        def __init__(self):
            super().__init__()
            self.fn = my_masked_loss

    assert resolve_loss_spec(Disguised()) is None


def test_resolve_plain_subclass_overrides_nothing():
    class Renamed(K.losses.MeanSquaredError):
        pass

    spec = resolve_loss_spec(Renamed())
    assert spec.is_subclass and not spec.overrides_call and not spec.overrides___call__


def test_resolve_loss_function_wrapper():
    wrapper_class = getattr(K.losses, "LossFunctionWrapper", None)
    if wrapper_class is None:
        pytest.skip("LossFunctionWrapper is not exported by this stack's keras.losses")
    wrapped = wrapper_class(K.losses.sparse_categorical_crossentropy, from_logits=True)
    spec = resolve_loss_spec(wrapped)
    assert spec.name == "sparse_categorical_crossentropy" and spec.from_logits


def test_resolve_compiled_model_loss():
    inputs = K.Input(shape=(3,))
    model = K.Model(inputs, K.layers.Dense(4, activation="softmax")(inputs))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert resolve_loss_spec(model.loss).name == "sparse_categorical_crossentropy"


def my_masked_loss(y_true, y_pred):
    return y_pred


def test_unknown_losses_resolve_to_none():
    assert resolve_loss_spec(my_masked_loss) is None
    assert resolve_loss_spec(lambda y_true, y_pred: y_pred) is None
    assert resolve_loss_spec("no_such_loss") is None
    assert resolve_loss_spec(None) is None

    class DirectLoss(K.losses.Loss):
        def call(self, y_true, y_pred):
            return y_pred

    assert resolve_loss_spec(DirectLoss()) is None
    # Stock losses the reference does not compute.
    assert resolve_loss_spec(K.losses.CosineSimilarity()) is None
    assert resolve_loss_spec(K.losses.Hinge()) is None
    wrapper_class = getattr(K.losses, "LossFunctionWrapper", None)
    if wrapper_class is not None:
        assert resolve_loss_spec(wrapper_class(my_masked_loss)) is None


def test_a_custom_function_named_like_a_keras_loss_is_not_trusted():
    def sparse_categorical_crossentropy(y_true, y_pred):
        return y_pred

    assert resolve_loss_spec(sparse_categorical_crossentropy) is None


def test_every_supported_loss_has_a_reference():
    for name in supported_losses():
        assert resolve_loss_spec(name) is not None or name == "crossentropy"


# ------------------------------------------------------------------------------------
# Cross-entropy on a softmax/sigmoid output: TensorFlow stacks use the logits underneath
# ------------------------------------------------------------------------------------

# Fixed output logits (the kernel is zero): class 3 sits 60 nats below class 4, so its
# probability (~1e-27) is far below Keras' clip at 1e-7 yet still a normal float32.
SOFTMAX_BIAS = np.array([0.0, -30.0, -5.0, -60.0, 2.0, -20.0], dtype=np.float32)
# Sigmoid outputs of about 2e-9 (logit -20): clipped they would score 16.1, not 20.
SIGMOID_BIAS = np.array([-20.0, -18.0, -1.0, 0.5, -25.0, -3.0], dtype=np.float32)


def model_with_output_bias(activation: str, bias: np.ndarray, output: str):
    inputs = K.Input(shape=(5, 4))
    dense = K.layers.Dense(bias.size, activation=None if output != "dense" else activation)
    hidden = dense(inputs)
    if output == "activation_layer":
        outputs = K.layers.Activation(activation)(hidden)
    elif output == "softmax_layer":
        outputs = K.layers.Softmax()(hidden)
    else:
        outputs = hidden
    model = K.Model(inputs, outputs)
    dense.set_weights([np.zeros((4, bias.size), np.float32), bias])
    return model, model.layers[-1]


@pytest.mark.parametrize("output", ["dense", "activation_layer", "softmax_layer"])
@pytest.mark.parametrize(
    "loss_name,options",
    [
        ("sparse_categorical_crossentropy", {}),
        ("categorical_crossentropy", {"label_smoothing": 0.1}),
        ("binary_crossentropy", {}),
    ],
)
def test_model_loss_on_an_activation_output(rng, output, loss_name, options):
    """evaluate()'s loss equals the mean of the reference given the predicted probabilities
    and activation_unwrapped_by_keras() for the output layer, on every stack."""
    activation = "sigmoid" if loss_name == "binary_crossentropy" else "softmax"
    if output == "softmax_layer" and activation != "softmax":
        pytest.skip("a Softmax layer has no sigmoid counterpart")
    bias = SIGMOID_BIAS if activation == "sigmoid" else SOFTMAX_BIAS
    model, output_layer = model_with_output_bias(activation, bias, output)
    loss_class = {
        "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
        "categorical_crossentropy": "CategoricalCrossentropy",
        "binary_crossentropy": "BinaryCrossentropy",
    }[loss_name]
    model.compile(optimizer="sgd", loss=getattr(K.losses, loss_class)(**options))
    x = rng.normal(size=(6, 5, 4)).astype(np.float32)
    labels = rng.integers(0, bias.size, size=(6, 5))
    y_true = {
        "sparse_categorical_crossentropy": labels,
        "categorical_crossentropy": np.eye(bias.size, dtype=np.float32)[labels],
        "binary_crossentropy": rng.integers(0, 2, size=(6, 5, bias.size)).astype(np.float32),
    }[loss_name]
    reported = model.evaluate(x, y_true, batch_size=6, verbose=0)
    probabilities = to_numpy(model(x))
    assert np.all(probabilities > 0)  # the bias keeps every probability representable

    spec = resolve_loss_spec(model.loss)
    unwrapped = activation_unwrapped_by_keras(output_layer, FLAVOUR)
    assert unwrapped == (activation if TF_BACKEND else None)
    reference = per_token_loss(
        spec, y_true, probabilities, flavour=FLAVOUR, unwrapped_activation=unwrapped
    )
    np.testing.assert_allclose(reference.mean(), reported, rtol=RTOL)
    # The other formula is far off here, so the helper's answer is what makes this pass.
    other = per_token_loss(
        spec,
        y_true,
        probabilities,
        flavour=FLAVOUR,
        unwrapped_activation=None if unwrapped else activation,
    )
    assert not np.isclose(other.mean(), reported, rtol=1e-3)


def test_time_distributed_output_is_not_unwrapped():
    layer = K.layers.TimeDistributed(K.layers.Dense(3, activation="softmax"))
    assert activation_unwrapped_by_keras(layer, FLAVOUR) is None


def test_unrecoverable_activation_combination_is_rejected():
    spec = LossSpec("binary_crossentropy")
    probs = np.full((1, 2, 3), 1 / 3, dtype=np.float32)
    with pytest.raises(ValueError, match="supply the logits"):
        per_token_loss(spec, probs, probs, flavour=FLAVOUR, unwrapped_activation="softmax")


def test_resolve_reduction_none_object():
    try:
        loss = K.losses.MeanSquaredError(reduction=None)
    except (ValueError, TypeError) as error:
        pytest.skip(f"reduction=None not accepted here: {error}")
    assert resolve_loss_spec(loss).reduction == "none"


def test_float16_predictions_are_computed_in_float32(rng):
    if not IS_KERAS3:
        pytest.skip("Keras 2 losses compute in float16 here; only float16 tolerances compare")
    labels = rng.integers(0, 7, size=(2, 5))
    _, probs = extreme_probabilities(rng, (2, 5, 7), labels)
    probs16 = probs.astype(np.float16)
    expected = keras_per_token("SparseCategoricalCrossentropy", labels, probs16)
    spec = LossSpec("sparse_categorical_crossentropy")
    assert_matches_keras(per_token_loss(spec, labels, probs16, flavour=FLAVOUR), expected)


def test_importing_the_reference_loads_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, pytest_maskloss.reference; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'jax') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
