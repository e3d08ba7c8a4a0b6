"""MSK005 padding-sample-weight-with-batch-mean."""

from __future__ import annotations

from pytest_maskloss.scan import edits, syntax
from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule, make_fix
from pytest_maskloss.scan.values import MASKED, Loc, LossV, ModelV, PaddingV, Str

REDUCTION = 'reduction="mean_with_sample_weight"'


class SampleWeightPaddingWithBatchMean(Rule):
    """Padding passed as `sample_weight` to a loss with the `sum_over_batch_size` reduction.

    ## What it does
    Finds `fit`, `evaluate`, `train_on_batch` and `test_on_batch` calls whose `sample_weight=`
    looks like padding (a comparison such as `y != 0`, `not_equal`, `greater`,
    `sequence_mask`, anything cast from one, or a name containing `mask` or `pad`), or whose
    data is a `tf.data` dataset mapped by a function that returns `(x, y, y != 0)`, on a
    model without a mask of its own, whose loss has the default reduction
    (`sum_over_batch_size`; an explicit other reduction silences the rule).

    KerasHub language-model tasks (`CausalLM`, `MaskedLM`, `Seq2SeqLM` and their
    model-specific subclasses such as `GPT2CausalLM`, `BertMaskedLM`, `BartSeq2SeqLM`, made by
    `from_preset` or by the constructor with a `preprocessor`) are reported where the user
    compiles them with the default loss (`compile()` without `loss`, `loss="auto"`, or a
    `sum_over_batch_size` loss), or, when the code never compiles them (`Task.__init__`
    compiles by default), at their `fit` / `evaluate` / `train_on_batch` / `test_on_batch`.

    ## Why is this bad?
    The weights zero the padded terms, but the divisor still counts every position, on every
    Keras version: the reported loss shrinks as padding grows (0.9657 instead of 1.6094 in the
    reference case, on Keras 3.15 and tf_keras 2.21 alike). This is how keras-hub language
    model tasks train: their preprocessors pass `padding_mask[..., 1:]` (causal LMs) or
    `mask_weights` (masked LMs) as `sample_weight` and their backbones carry no Keras mask
    (measured with keras-hub 0.32.0 on Keras 3.15.1: a tiny `GPT2CausalLM` on 4 padded strings
    reports 1.402195 from `evaluate`, the masked token mean is 3.451558).

    Severity: **error** on every Keras version.

    ## Example
    ```python
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, sample_weight=(y != 0).astype("float32"))
    ```

    ## Use instead
    ```python
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))
    model.fit(x, y, sample_weight=(y != 0).astype("float32"))
    ```

    ## Fix safety
    On Keras ≥ 3.7 only, the fix adds `reduction="mean_with_sample_weight"` to the loss
    instance in a `compile` call of the same file. It is unsafe: the reported value changes.
    """

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
        """
# keras-version: 3.15
import keras
import keras_hub
lm = keras_hub.models.GPT2CausalLM.from_preset("gpt2_base_en")
lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))
lm.fit(texts)
""",
        """
import keras_hub
lm = keras_hub.models.GPT2CausalLM(backbone=backbone)
lm.fit(token_ids, labels)
""",
        """
import keras_hub
lm = keras_hub.models.GemmaCausalLM.from_preset("gemma_2b_en")
lm.compile(sampler="top_k")
lm.generate("What should I do on a trip to Europe?")
""",
        """
import tensorflow as tf
def pairs(x, y):
    return x, y
ds = tf.data.Dataset.from_tensor_slices((x, y)).map(pairs).batch(32)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
model.fit(ds)
""",
    ]
    INVALID = [
        Invalid(
            code="""
# keras-version: 3.7
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
weights = (y != 0).astype("float32")
model.fit(x, y, sample_weight=weights)
""",
            fixed="""
# keras-version: 3.7
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))
weights = (y != 0).astype("float32")
model.fit(x, y, sample_weight=weights)
""",
        ),
        Invalid(
            code="""
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
model.evaluate(x, y, sample_weight=padding_mask)
""",
            fixed="""
import tensorflow as tf
import pytest_maskloss.keras
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile(loss=pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
model.evaluate(x, y, sample_weight=padding_mask)
""",
        ),
        Invalid(  # the weights come from the tf.data pipeline
            code="""
import tensorflow as tf
def with_weights(x, y):
    return x, y, y != 0
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).map(with_weights)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
model.fit(ds, epochs=2)
""",
            fixed="""
import tensorflow as tf
import pytest_maskloss.keras
def with_weights(x, y):
    return x, y, y != 0
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).map(with_weights)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile(loss=pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"))
model.fit(ds, epochs=2)
""",
        ),
        Invalid(  # never compiled: Task.__init__ compiled the default loss
            code="""
import keras_nlp
lm = keras_nlp.models.GPT2CausalLM.from_preset("gpt2_base_en")
lm.fit(texts, epochs=1)
""",
            fixed="""
import keras
import keras_nlp
lm = keras_nlp.models.GPT2CausalLM.from_preset("gpt2_base_en")
lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))
lm.fit(texts, epochs=1)
""",
        ),
        Invalid(
            code="""
# keras-version: 3.15
import keras
import keras_hub
lm = keras_hub.models.BertMaskedLM(backbone, preprocessor=preprocessor)
lm.compile(optimizer=keras.optimizers.AdamW(5e-5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
lm.fit(ds)
""",
            fixed="""
# keras-version: 3.15
import keras
import keras_hub
lm = keras_hub.models.BertMaskedLM(backbone, preprocessor=preprocessor)
lm.compile(optimizer=keras.optimizers.AdamW(5e-5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))
lm.fit(ds)
""",
        ),
        Invalid(  # compile(sampler=...) before generate is not reported; the compile before fit is
            code="""
import keras_hub
seq2seq = keras_hub.models.BartSeq2SeqLM.from_preset("bart_base_en")
seq2seq.compile(sampler="greedy")
seq2seq.generate(prompts)
seq2seq.compile(optimizer="adam")
seq2seq.fit(pairs)
""",
            fixed="""
import keras
import keras_hub
seq2seq = keras_hub.models.BartSeq2SeqLM.from_preset("bart_base_en")
seq2seq.compile(sampler="greedy")
seq2seq.generate(prompts)
seq2seq.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))
seq2seq.fit(pairs)
""",
        ),
    ]

    def check(self, an):
        yield from _task_findings(an)
        for fact in an.fits:
            if fact.sw_node is None or not _looks_like_padding(fact.sample_weight, fact.sw_node):
                continue
            model = fact.model
            stock = None
            if isinstance(model, ModelV):
                if model.output().state == MASKED:
                    continue  # the mask already divides by real tokens; MSK001 covers old versions
                reductions = []
                for c in model.compiles:
                    for value, node in c.losses:
                        if isinstance(value, LossV):
                            reductions.append(value.reduction)
                            if value.kind == "stock" and value.reduction is None and value.call_node is not None and c.loc.module is an:
                                stock = Loc(an, c.loc.unit, value.call_node, c.loc.top)
                            if value.kind == "masked":
                                reductions.append("masked")
                if any(r not in (None, "sum_over_batch_size", "auto") for r in reductions):
                    continue
            fix = None
            if stock is not None and an.target.has_mean_with_sample_weight:
                fix = make_fix(
                    f"add {REDUCTION} to the loss (changes the reported value: unsafe)",
                    lambda stock=stock: [edits.replace_edit(stock, _with_reduction(stock))],
                )
            yield Raw(
                Loc(an, fact.loc.unit, fact.sw_node, fact.loc.top),
                f"padding passed as sample_weight to {fact.method}()"
                f"{' (the third element of the tf.data batches)' if fact.from_dataset else ''} with a sum_over_batch_size loss: "
                f"the weights zero the padding but the divisor still counts it (every Keras version), "
                f"so the reported loss shrinks with padding; use {REDUCTION} "
                f"(Keras >= 3.7) or a masked loss",
                "error",
                fix,
            )


_TASK_WHY = (
    "its preprocessor passes the padding as sample_weight, and the divisor of the "
    "sum_over_batch_size loss still counts it (every Keras version), so the reported loss shrinks "
    "with padding"
)


def _task_findings(an):
    """KerasHub language-model tasks, for each fit/evaluate: at the compile in force then when it
    keeps the default loss (or another sum_over_batch_size loss), at the fit itself when the
    code never compiled the task (Task.__init__ did). A compile followed by no fit (e.g.
    ``compile(sampler=...)`` before ``generate``) is not reported."""
    for fact in an.fits:
        model = fact.model
        if fact.sw_node is not None or not isinstance(model, ModelV) or model.task is None:
            continue
        kind, has_pre, compiled = model.task
        if not has_pre:
            continue
        if fact.compiles_before == 0:
            if compiled:
                yield Raw(fact.loc, f"{model.name}.{fact.method}() with the loss Task.__init__ compiled "
                          f"(SparseCategoricalCrossentropy(from_logits=True), sum_over_batch_size): {_TASK_WHY}; "
                          f"compile first with loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, "
                          f"{REDUCTION}) (Keras >= 3.7)", "error")
            continue
        c = model.compiles[fact.compiles_before - 1]
        if not c.losses or (len(c.losses) == 1 and isinstance(c.losses[0][0], Str) and c.losses[0][0].value == "auto"):
            yield Raw(c.loc, f"{model.name}.compile() keeps the default loss, SparseCategoricalCrossentropy(from_logits=True) "
                      f"with reduction sum_over_batch_size: {_TASK_WHY}; pass loss=keras.losses.SparseCategoricalCrossentropy("
                      f"from_logits=True, {REDUCTION}) (Keras >= 3.7)", "error")
            continue
        for value, node in c.losses:
            if (isinstance(value, LossV) and value.kind == "stock" and value.reduction in (None, "sum_over_batch_size", "auto")) \
                    or (isinstance(value, Str) and value.value != "auto"):
                loc = Loc(c.loc.module, c.loc.unit, node, c.loc.top)
                fix = None
                if isinstance(value, LossV) and value.reduction is None and value.call_node is node and an.target.has_mean_with_sample_weight:
                    fix = make_fix(f"add {REDUCTION} to the loss (changes the reported value: unsafe)",
                                   lambda loc=loc: [edits.replace_edit(loc, _with_reduction(loc))])
                yield Raw(loc, f"{model.name} compiled with a sum_over_batch_size loss, then {fact.method}(): {_TASK_WHY}; "
                          f"use {REDUCTION} (Keras >= 3.7)", "error", fix)


def _looks_like_padding(value, node) -> bool:
    if isinstance(value, PaddingV):
        return True
    name = syntax.dotted(node) or ""
    leaf = name.rsplit(".", 1)[-1].lower()
    return any(w in leaf for w in ("mask", "pad", "nonzero", "not_pad"))


def _with_reduction(loc: Loc) -> str:
    """The loss call's text with the reduction keyword added as its last argument."""
    text = edits.code_for(loc)
    if loc.node.args:
        new = text[: text.rstrip().rfind(")")].rstrip()
        return new + (" " if new.endswith(",") else ", ") + REDUCTION + ")"
    return text.rstrip()[:-1] + REDUCTION + ")"
