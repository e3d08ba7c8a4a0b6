"""The Keras flavours, their names, and what each version does to a masked loss.

This is the one module that spells the flavours out. Everything else (the runtime check, the
pytest plugin, the losses, the scanner) asks it, the way Keras code asks ``keras.config.backend()``
instead of guessing. Pure Python: the scanner imports it without TensorFlow, Keras or numpy.

A *flavour* is which Keras API a model is built with:

* ``KERAS3``: Keras 3 (``import keras`` with ``keras>=3``), on any backend;
* ``TF_KERAS``: the standalone ``tf_keras`` package (Keras 2 API, from TensorFlow 2.15 on,
  selected with ``TF_USE_LEGACY_KERAS=1``);
* ``TF_DOT_KERAS``: the Keras 2 bundled as ``tf.keras`` in TensorFlow 2.x up to 2.15.

A *stack* is a flavour on a backend (only Keras 3 has a choice): its name, ``stack_name()``, is
what reports, references and tests use.

The facts below were measured on CPU with the versions named in ``docs/failure-modes.md``.
"""

from __future__ import annotations

KERAS3 = "keras3"
TF_KERAS = "tf_keras"
TF_DOT_KERAS = "tf.keras"
FLAVOURS = (KERAS3, TF_KERAS, TF_DOT_KERAS)
KERAS2_FLAVOURS = (TF_KERAS, TF_DOT_KERAS)

TENSORFLOW, JAX, TORCH, NUMPY = "tensorflow", "jax", "torch", "numpy"
BACKENDS = (TENSORFLOW, JAX, TORCH, NUMPY)

# The top-level packages whose classes are Keras's own (a model's class tells its flavour).
KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow")
# The packages the Keras ``Model`` class is imported from, per flavour (tf.keras 2.x ships as
# the ``keras`` 2.x package).
MODEL_PACKAGES = {KERAS3: "keras", TF_KERAS: "tf_keras", TF_DOT_KERAS: "keras"}
LEGACY_ENV = "TF_USE_LEGACY_KERAS"  # "1": tf.keras is tf_keras (TensorFlow >= 2.16)

_LABELS = {KERAS3: "Keras", TF_KERAS: "tf_keras", TF_DOT_KERAS: "tf.keras"}


def stack_name(flavour: str, backend: str = TENSORFLOW) -> str:
    """``"keras3-jax"``, ``"tf_keras"``, ...: the flavour, and for Keras 3 its backend."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown Keras flavour {flavour!r}; expected one of {FLAVOURS}")
    if flavour == KERAS3:
        if backend not in BACKENDS:
            raise ValueError(f"unknown Keras 3 backend {backend!r}; expected one of {BACKENDS}")
        return f"{KERAS3}-{backend}"
    return flavour


STACKS = tuple(stack_name(KERAS3, b) for b in BACKENDS) + KERAS2_FLAVOURS


def parse_stack(name: str) -> tuple[str, str]:
    """(flavour, backend) of a stack name; ValueError for anything else."""
    if name in KERAS2_FLAVOURS:
        return name, TENSORFLOW
    flavour, _, backend = name.partition("-")
    if flavour == KERAS3 and backend in BACKENDS:
        return flavour, backend
    raise ValueError(f"unknown Keras stack {name!r}; expected one of {STACKS}")


def label(flavour: str, version: str, backend: str = TENSORFLOW, note: str = "") -> str:
    """``"Keras 3.15.1 (tensorflow backend)"``: how reports name a stack (``note`` goes inside
    the parentheses)."""
    return f"{_LABELS[flavour]} {version} ({backend} backend{note})"


def flavour_label(flavour: str) -> str:
    return _LABELS[flavour]


def flavour_of_package(package: str, major: int | None) -> str | None:
    """The flavour a ``keras`` / ``tf_keras`` package of that major version provides."""
    if package == "tf_keras":
        return TF_KERAS
    if package == "keras" and major is not None:
        return KERAS3 if major >= 3 else TF_DOT_KERAS
    return None


def flavour_of_tensorflow(version: tuple[int, ...]) -> str:
    """The ``tf.keras`` a TensorFlow version ships (without ``TF_USE_LEGACY_KERAS``)."""
    return KERAS3 if version[:2] >= (2, 16) else TF_DOT_KERAS


# --- what a masked loss does, by flavour and version ---------------------------------------
# ``version`` is the Keras version as a tuple; None when unknown. Each fact returns None when it
# cannot be decided from what is known.


def padding_in_denominator(flavour: str | None, version: tuple[int, ...] | None) -> bool | None:
    """Does a stock loss divide a masked batch by every position, padding included?

    True on tf.keras before 2.11 (the mask zeroes the padded terms, the default reduction
    still divides by B·T); later Keras 2 and Keras 3 divide by the real tokens.
    """
    if flavour in (KERAS3, TF_KERAS):  # tf_keras starts at 2.15
        return False
    if flavour == TF_DOT_KERAS and version:
        return version[:2] < (2, 11)
    return None


def has_mean_with_sample_weight(flavour: str | None, version: tuple[int, ...] | None) -> bool | None:
    """Is ``reduction="mean_with_sample_weight"`` available (Keras >= 3.7)?"""
    if flavour in KERAS2_FLAVOURS:
        return False
    if flavour == KERAS3 and version and len(version) >= 2:
        return version[:2] >= (3, 7)
    return None


def attention_clears_input_masks(flavour: str | None, version: tuple[int, ...] | None) -> bool | None:
    """Does ``MultiHeadAttention`` clear the Keras mask of the tensors it is given as query,
    value and key (so a residual ``Add()([x, attention(x, x)])`` sees an unmasked ``x``)?

    Keras 3.8.0 to 3.15.1: yes, without a warning (measured; the attention output keeps the
    query's mask). Keras 3.6 and tf_keras / tf.keras keep the masks. Keras 3 of an unknown
    minor version: undecided.
    """
    if flavour in KERAS2_FLAVOURS:
        return False
    if flavour == KERAS3 and version and len(version) >= 2:
        return version[:2] >= (3, 8)
    return None


def merge_drops_mask_of_partly_masked_inputs(flavour: str | None, version: tuple[int, ...] | None) -> bool | None:
    """Does a merge layer (``Add``, ``Concatenate``, ...) given a masked and an unmasked input
    drop the mask?

    Keras 3: yes (3.4 and later combine masks only when every input has one, measured on
    3.15.1; 3.0 to 3.3 never propagate a mask through a merge, read). tf.keras and tf_keras:
    no, the masked inputs' masks are kept.
    """
    if flavour in KERAS2_FLAVOURS:
        return False
    if flavour == KERAS3:
        return True
    return None


def merge_drops_mask_of_masked_inputs(flavour: str | None, version: tuple[int, ...] | None) -> bool:
    """Does a merge of inputs that all carry a mask drop it? Only Keras 3.0 to 3.3 (read)."""
    return bool(flavour == KERAS3 and version and len(version) >= 2 and version[:2] < (3, 4))


def ignore_class_divides_by_real_tokens(flavour: str | None, version: tuple[int, ...] | None) -> bool | None:
    """Does ``SparseCategoricalCrossentropy(ignore_class=<pad>)`` with the default reduction
    give each batch the mean over its real tokens, even where a stock loss on a masked output
    counts padding (tf.keras before 2.11)?

    tf.keras 2.10 (where ``ignore_class`` first exists): yes, the loss rescales by its own mask
    (measured 2.2019911, the batch-weighted mean of masked batch means, where the stock loss
    reports 1.3765111). tf.keras >= 2.11, tf_keras and Keras 3: yes (Σ l·w·m / Σ m). Before
    2.10 there is no ``ignore_class``.
    """
    if flavour in (KERAS3, TF_KERAS):
        return True
    if flavour == TF_DOT_KERAS and version:
        return version[:2] >= (2, 10)
    return None


def negative_labels_scored_zero(flavour: str | None, backend: str | None) -> bool | None:
    """Are negative padding labels (``-100``, ``-1``) given to a sparse cross-entropy without
    ``ignore_class`` scored 0 while the divisor still counts them?

    Keras 3 on JAX and PyTorch: yes (3.15.1 measured: 1.096396 reported vs 1.754234 token
    mean). On TensorFlow they raise an error instead (every flavour), so nothing is misreported.
    """
    if flavour in KERAS2_FLAVOURS or backend == TENSORFLOW:
        return False
    if backend in (JAX, TORCH):
        return True if flavour in (KERAS3, None) else False
    return None


def mask_zero_index(flavour: str | None) -> tuple[int, ...]:
    """Positions ``Embedding``'s ``mask_zero`` may take as a positional argument (0-based).

    Keras 3: the 6th, after ``embeddings_constraint``; Keras 2: the 7th (``activity_regularizer``
    comes first). Unknown flavour: either.
    """
    if flavour == KERAS3:
        return (5,)
    if flavour in KERAS2_FLAVOURS:
        return (6,)
    return (5, 6)


def tensorflow_backed(stack: str) -> bool:
    """Stacks whose losses run on TensorFlow ops."""
    return parse_stack(stack)[1] == TENSORFLOW


def crossentropy_from_logits_under_activation(stack: str) -> bool:
    """Does a cross-entropy on a softmax/sigmoid output use the logits under the activation?

    On the TensorFlow stacks Keras finds them (``_keras_logits`` or the graph's Softmax/Sigmoid
    op) and skips the clipping; Keras 3 on JAX and PyTorch uses the probabilities.
    """
    return tensorflow_backed(stack)


def sparse_crossentropy_renormalises_clipped(stack: str) -> bool:
    """Sparse cross-entropy from probabilities: clip, then divide by the clipped row sum
    (TensorFlow stacks, through a softmax cross-entropy of log p); elsewhere divide first."""
    return tensorflow_backed(stack)


def binary_crossentropy_adds_epsilon(stack: str) -> bool:
    """Binary cross-entropy from probabilities takes ``log(p + eps)`` (Keras 2) rather than
    ``log(p)`` after clipping (Keras 3)."""
    return parse_stack(stack)[0] in KERAS2_FLAVOURS


def token_statistics_in_step(stack: str) -> bool:
    """Can a sparse categorical cross-entropy be observed through per-token statistics computed
    inside the step (``compat.tokenstats``) instead of the full predictions? Tested on Keras 3
    with TensorFlow, JAX and PyTorch, on tf_keras and on tf.keras 2.10
    (tests/runtime/test_tokenstats.py); not on Keras 3's numpy backend, which has no training
    step."""
    return stack in (stack_name(KERAS3, TENSORFLOW), stack_name(KERAS3, JAX),
                     stack_name(KERAS3, TORCH)) + KERAS2_FLAVOURS


TORCH_IGNORE_INDEX = -100  # torch.nn.functional.nll_loss's default ignore_index


def sparse_labels_scored_zero(stack: str, labels):
    """Where a sparse cross-entropy without ``ignore_class`` scores a label outside the
    vocabulary 0 and still counts it in the divisor (``labels``: a numpy array; the result is a
    boolean array, or None where the stack scores none so). Keras 3 on JAX one-hot encodes a
    negative label to zeros (``-100``, ``-1``: measured on 3.15.1); on PyTorch it calls
    ``nll_loss``, which leaves out only its ``ignore_index`` ``-100`` and raises on ``-1``; the
    TensorFlow stacks raise ``InvalidArgumentError`` on any of them."""
    flavour, backend = parse_stack(stack)
    if flavour != KERAS3:
        return None
    if backend == JAX:
        return labels < 0
    if backend == TORCH:
        return labels == TORCH_IGNORE_INDEX
    return None


def backend_keeps_masks(flavour: str | None, version: tuple[int, ...] | None, backend: str) -> bool | None:
    """Do Keras masks survive on this backend's arrays? Keras 3.0–3.5 on JAX sets the mask as
    a ``_keras_mask`` attribute, which JAX arrays reject, so no mask reaches the loss (measured
    on 3.5.0: the unmasked mean is reported); 3.6.0 keeps such masks in a table of its own."""
    if flavour != KERAS3 or backend != JAX:
        return True if flavour in FLAVOURS else None
    if not version or len(version) < 2:
        return None
    return version[:2] >= (3, 6)


def on_batch_returns_running_mean(flavour: str | None, version: tuple[int, ...] | None) -> bool | None:
    """Do ``train_on_batch``/``test_on_batch`` return the loss tracker's running mean over every
    call since the last reset (an ``evaluate`` or a ``fit`` epoch) instead of the batch's own
    loss? Keras 3.0–3.14 (measured on 3.5.0); 3.15.0 resets the metrics in each call, and Keras 2
    resets them by default (``reset_metrics=True``)."""
    if flavour in KERAS2_FLAVOURS:
        return False
    if flavour == KERAS3 and version and len(version) >= 2:
        return version[:2] < (3, 15)
    return None
