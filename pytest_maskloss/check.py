"""The check: run a model's own reporting paths on padded data and compare every reported
figure with the masked reference computed in numpy from the model's predictions.

Flow: read the data batch by batch (data.py) → per-token losses and the padding mask in numpy
(reference.py, masking below) → sums accumulated per batch and per epoch → each path's reported
figures judged against them (diagnose.py) → a Report (report.py), raised as MaskLossMismatch
by ``assert_masked_loss`` when a figure is off.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from pytest_maskloss import _keras
from pytest_maskloss.data import Batch, DataSource, batch_tuple
from pytest_maskloss.diagnose import Candidate, judge
from pytest_maskloss.errors import MaskLossInputError, MaskLossMismatch
from pytest_maskloss.reference import (
    LossSpec,
    activation_unwrapped_by_keras,
    per_token_loss,
    resolve_loss_spec,
    valid_token_mask,
)
from pytest_maskloss.report import Comparison, Report, mismatch_message

ALL_PATHS = ("evaluate", "test_on_batch", "train_on_batch", "fit")
GRANULARITIES = ("batch", "token")

# Default tolerances by compute dtype: float32 sums over many tokens, float16/bfloat16 under
# mixed precision.
TOLERANCES = {
    "float32": (1e-5, 1e-6),
    "float64": (1e-7, 1e-9),
    "float16": (1e-3, 1e-4),
    "mixed_float16": (1e-3, 1e-4),
    "bfloat16": (1e-2, 1e-3),
    "mixed_bfloat16": (1e-2, 1e-3),
}

_FLAVOURS = {("keras3", "tensorflow"): "keras3-tensorflow", ("keras3", "jax"): "keras3-jax"}

# Metrics whose per-token values we can compute, by the name Keras logs them under.
_ACCURACY_NAMES = {
    "accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy",
}
# pytest_maskloss.keras.TokenMeanLoss / TokenPerplexity: Σ l·m / Σ m over the epoch (and its exp)
_TOKEN_METRICS = {"token_mean_loss", "token_perplexity"}
_CROSSENTROPY_NAMES = {
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
}


def assert_masked_loss(model, x, y=None, sample_weight=None, **options) -> Report:
    """Check that every loss (and masked metric) ``model`` reports on ``(x, y)`` is the mean
    over real tokens; raise ``MaskLossMismatch`` naming the failure mode if one is not.

    Returns the ``Report`` when every compared figure matches. Options are those of
    ``check_masked_loss``.
    """
    __tracebackhide__ = True  # a failing test shows the caller's line and the diagnosis only
    report = check_masked_loss(model, x, y, sample_weight, **options)
    if report.findings:
        raise MaskLossMismatch(mismatch_message(report), report=report, findings=report.findings)
    return report


def check_masked_loss(
    model,
    x,
    y=None,
    sample_weight=None,
    *,
    batch_size=None,
    steps=None,
    pad_id=0,
    pad_in="auto",
    mask=None,
    per_token_loss_fn=None,
    paths=ALL_PATHS,
    granularity="batch",
    rtol=None,
    atol=None,
    metrics=True,
) -> Report:
    """Run the checks and return the Report (mismatches are in ``report.findings``).

    Data: numpy arrays (``x``, ``y``, ``sample_weight``, ``batch_size``; dict/list inputs and
    outputs), a ``tf.data.Dataset`` yielding ``(x, y[, sample_weight])``, a Keras
    Sequence/PyDataset, a generator function (called afresh for each pass) or a generator
    (read once and kept in memory). ``steps`` limits the number of batches (required for data
    that never ends).

    Padding: ``pad_in`` is "labels" (``y == pad_id``), "inputs" (``x == pad_id``, or the
    Masking layer's ``mask_value``), "sample_weight" (zero weights), or "auto": the model's
    mask source when it has one (Embedding(mask_zero=True) → inputs, Masking → inputs), zero
    sample weights when given, else the labels. ``mask`` overrides all of them: an array
    aligned with array data, or a function ``mask(batch) -> (B, T) bool``.

    ``per_token_loss_fn(y_true, y_pred) -> (B, T) array`` (numpy) gives the reference for a
    custom loss (a dict of them for several outputs). ``paths`` chooses among
    evaluate, test_on_batch, train_on_batch and fit. ``granularity`` "batch": each batch's
    figure must be its masked mean and epoch figures Keras' aggregation of those; "token":
    epoch figures must be the mean over all real tokens of the data. ``rtol``/``atol``
    default by the model's compute dtype.
    """
    return _Check(
        model, DataSource(x, y, sample_weight, batch_size=batch_size, steps=steps),
        pad_id=pad_id, pad_in=pad_in, mask=mask, per_token_loss_fn=per_token_loss_fn,
        paths=paths, granularity=granularity, rtol=rtol, atol=atol, metrics=metrics,
    ).run()


# --- per-output loss bookkeeping ---------------------------------------------------------


@dataclass
class _Output:
    name: str
    index: int
    loss_text: str
    spec: LossSpec | None
    fn: object  # numpy per-token function (custom) or None
    weight: float = 1.0
    # TensorFlow stacks compute a cross-entropy from the logits under a softmax/sigmoid output
    unwrapped: str | None = None

    def per_token(self, y_true, y_pred, flavour):
        if self.fn is not None:
            return np.asarray(self.fn(np.asarray(y_true), np.asarray(y_pred)), dtype=np.float64)
        return per_token_loss(self.spec, y_true, y_pred, flavour=flavour, unwrapped_activation=self.unwrapped)


@dataclass
class _BatchSums:
    """The sums of one batch for one output (or the weighted total over outputs)."""

    size: int
    masked: float = 0.0  # Σ l·w·m
    weight: float = 0.0  # Σ w·m
    unmasked: float = 0.0  # Σ l·w
    positions: int = 0  # B·T
    real: int = 0
    replica_means: list = field(default_factory=list)

    def ref(self):
        return self.masked / self.weight if self.weight > 0 else float("nan")

    def pad_denominator(self):
        return self.masked / self.positions

    def unmasked_mean(self):
        return self.unmasked / self.positions

    def replica_mean(self):
        vals = [v for v in self.replica_means if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else float("nan")


@dataclass
class _EpochSums:
    """Accumulated over batches: Σ l·m, Σ m (token level) and each batch-level formula
    aggregated the way Keras aggregates batches (weighted by sequences), so an epoch figure
    can be explained without keeping the batches."""

    masked: float = 0.0
    weight: float = 0.0
    sequences: int = 0
    batches: int = 0
    real: int = 0
    positions: int = 0
    empty_batches: int = 0
    nonempty_sequences: int = 0
    by_seq: dict = field(default_factory=lambda: {k: 0.0 for k in _EPOCH_KEYS})
    sum_of_batch_means: float = 0.0

    def add(self, s: _BatchSums):
        self.masked += s.masked
        self.weight += s.weight
        self.sequences += s.size
        self.batches += 1
        self.real += s.real
        self.positions += s.positions
        empty = s.weight <= 0
        self.empty_batches += int(empty)
        ref = 0.0 if empty else s.ref()
        # the reference leaves an all-padding batch out (it has no mean); Keras may count it
        if not empty:
            self.by_seq["reference"] += s.size * ref
            self.nonempty_sequences += s.size
        self.by_seq["empty-batch-zero"] += s.size * ref
        self.by_seq["padding-in-denominator"] += s.size * s.pad_denominator()
        self.by_seq["unmasked"] += s.size * s.unmasked_mean()
        self.by_seq["replicas-weighted-equally"] += s.size * (0.0 if empty else s.replica_mean())
        self.by_seq["empty-batch-nan"] += s.size * (float("nan") if empty else ref)
        self.sum_of_batch_means += ref

    def mean_of_batch_means(self):
        return self.sum_of_batch_means / self.batches if self.batches else float("nan")

    def token_mean(self):
        return self.masked / self.weight if self.weight > 0 else float("nan")

    def seq_weighted(self, key):
        sequences = self.nonempty_sequences if key == "reference" else self.sequences
        return self.by_seq[key] / sequences if sequences else float("nan")


_EPOCH_KEYS = (
    "reference", "padding-in-denominator", "unmasked", "replicas-weighted-equally", "empty-batch-nan",
    "empty-batch-zero",
)


class _Check:
    def __init__(self, model, data: DataSource, *, pad_id, pad_in, mask, per_token_loss_fn,
                 paths, granularity, rtol, atol, metrics):
        self.model = model
        self.info = _keras.keras_info(model)
        if not _keras.is_compiled(model):
            raise MaskLossInputError(
                f"model {model.name!r} is not compiled: call model.compile(optimizer, loss) "
                "before checking its reported loss"
            )
        unknown = [p for p in paths if p not in ALL_PATHS]
        if unknown:
            raise MaskLossInputError(f"unknown path(s) {unknown}; choose from {list(ALL_PATHS)}")
        if granularity not in GRANULARITIES:
            raise MaskLossInputError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
        self.data = data
        self.pad_id = pad_id
        self.mask = mask
        self.paths = tuple(paths)
        self.granularity = granularity
        self.metrics = metrics
        self.flavour = _FLAVOURS.get((self.info.flavour, self.info.backend), self.info.flavour)
        dtype = _keras.compute_dtype(model)
        default = TOLERANCES.get(dtype, TOLERANCES["float32"])
        self.rtol = default[0] if rtol is None else rtol
        self.atol = default[1] if atol is None else atol
        self.outputs = self._outputs(per_token_loss_fn)
        self.mask_sources = _keras.mask_source_layers(model)
        self.pad_in = self._resolve_pad_in(pad_in)
        self.replicas = _keras.num_replicas(model)
        self.metric_names = []
        self.output_has_mask = False
        self.mask_dropper = None
        self.report = Report(
            keras=self.info.label,
            loss="; ".join(f"{o.name}: {o.loss_text}" if len(self.outputs) > 1 else o.loss_text for o in self.outputs),
            data=data.describe(),
            padding=self._padding_text(),
            granularity=granularity,
            rtol=self.rtol,
            atol=self.atol,
        )

    @contextmanager
    def _timed(self, what):
        start = time.perf_counter()
        try:
            yield
        finally:
            timings = self.report.timings
            timings[what] = timings.get(what, 0.0) + time.perf_counter() - start

    # -- set-up ---------------------------------------------------------------------------

    def _outputs(self, per_token_loss_fn):
        loss = _keras.compiled_loss(self.model)
        names = list(getattr(self.model, "output_names", None) or ["output"])
        if loss is None:
            raise MaskLossInputError(
                f"model {self.model.name!r} was compiled without a loss: there is no reported loss to check"
            )
        if isinstance(loss, dict):
            per_output = [(n, loss.get(n)) for n in names]
        elif isinstance(loss, (list, tuple)):
            per_output = list(zip(names, loss))
        else:
            per_output = [(names[0] if len(names) == 1 else n, loss) for n in names]
        weights = _loss_weights(self.model, names)
        layers = _keras.output_layers(self.model)
        outputs = []
        for index, (name, item) in enumerate(per_output):
            if item is None:
                continue
            fn = per_token_loss_fn.get(name) if isinstance(per_token_loss_fn, dict) else per_token_loss_fn
            spec = resolve_loss_spec(item)
            text = spec.source if spec is not None else _describe_loss(item)
            if fn is None and spec is None:
                raise MaskLossInputError(
                    f"no numpy reference for the custom loss {text} of output {name!r}: pass "
                    "per_token_loss_fn=fn where fn(y_true, y_pred) returns the per-token losses "
                    "(shape (batch, time)) as numpy"
                )
            if fn is not None:
                text += " (reference: per_token_loss_fn)"
            layer = layers[index] if index < len(layers) else None
            unwrapped = activation_unwrapped_by_keras(layer, self.flavour) if layer is not None and spec is not None and not spec.from_logits else None
            outputs.append(_Output(name, index, text, spec, fn, weights.get(name, 1.0), unwrapped))
        return outputs

    def _resolve_pad_in(self, pad_in):
        if self.mask is not None:
            return "mask"
        choices = ("auto", "labels", "inputs", "sample_weight")
        if pad_in not in choices and not isinstance(pad_in, str):
            raise MaskLossInputError(f"pad_in must be one of {choices} or an input name, not {pad_in!r}")
        if pad_in != "auto":
            return pad_in
        for layer in self.mask_sources:
            kind = type(layer).__name__
            if kind in ("Embedding", "Masking"):
                return "inputs"
        return "auto"  # decided per batch: zero sample weights if any, else labels

    def _padding_text(self):
        if self.pad_in == "mask":
            return "the mask given to the check"
        if self.pad_in == "inputs":
            masking = self._masking_layer()
            if masking is not None:
                return f"inputs equal to the Masking value {masking.mask_value!r}"
            return f"inputs equal to pad id {self.pad_id!r}"
        if self.pad_in == "sample_weight":
            return "zero sample weights"
        if self.pad_in == "labels":
            return f"labels equal to pad id {self.pad_id!r}"
        if self.pad_in not in ("auto",):
            return f"input {self.pad_in!r} equal to pad id {self.pad_id!r}"
        return f"zero sample weights, else labels equal to pad id {self.pad_id!r}"

    def _masking_layer(self):
        return next((l for l in self.mask_sources if type(l).__name__ == "Masking"), None)

    # -- the padding mask of a batch -----------------------------------------------------

    def _token_mask(self, batch: Batch, y_out, shape, batch_index, start):
        if self.pad_in == "mask":
            if callable(self.mask):
                m = np.asarray(self.mask(batch))
            else:
                m = np.asarray(self.mask)[start:start + batch.size]
            return self._fit_mask(m, shape, "the mask given to the check")
        pad_in = self.pad_in
        if pad_in == "auto":
            from_weights = self._padding_from_weights(batch)
            pad_in = "sample_weight" if from_weights else "labels"
            self.report.padding = "zero sample weights" if from_weights else f"labels equal to pad id {self.pad_id!r}"
        if pad_in == "sample_weight":
            if batch.sample_weight is None:
                raise MaskLossInputError("pad_in='sample_weight' but the data has no sample_weight")
            return self._fit_mask(np.asarray(_first(batch.sample_weight)) != 0, shape, "sample_weight")
        if pad_in == "labels":
            labels = np.asarray(y_out)
            if labels.ndim == len(shape) + 1 and labels.shape[-1] == 1:
                labels = labels[..., 0]
            if labels.ndim == len(shape) + 1:  # dense labels: padding is an all-pad_id vector
                return self._fit_mask(~np.all(labels == self.pad_id, axis=-1), shape, "labels")
            return self._fit_mask(labels != self.pad_id, shape, "labels")
        # inputs
        tokens = self._token_input(batch.x, pad_in)
        masking = self._masking_layer()
        if masking is not None and pad_in == "inputs":
            return self._fit_mask(np.any(tokens != masking.mask_value, axis=-1), shape, "inputs")
        return self._fit_mask(tokens != self.pad_id, shape, "inputs")

    def _token_input(self, x, pad_in):
        if isinstance(x, dict):
            if pad_in in x:
                return np.asarray(x[pad_in])
            candidates = [k for k, v in x.items() if np.asarray(v).ndim >= 2]
            if len(candidates) != 1:
                raise MaskLossInputError(
                    f"dict inputs {sorted(x)}: say which one holds the padded tokens with pad_in=<name>"
                )
            return np.asarray(x[candidates[0]])
        if isinstance(x, (list, tuple)):
            return np.asarray(x[0])
        return np.asarray(x)

    @staticmethod
    def _fit_mask(m, shape, source):
        m = np.asarray(m)
        if m.ndim == 1 and len(shape) == 2:  # per-sequence weights
            m = np.broadcast_to(m[:, None], shape)
        if m.shape != tuple(shape):
            raise MaskLossInputError(
                f"the padding mask from {source} has shape {m.shape} but the per-token losses "
                f"have shape {tuple(shape)}: labels and predictions must share the (batch, time) "
                "axes (is the output per sequence rather than per token?)"
            )
        return m.astype(bool)

    # -- per-batch sums -----------------------------------------------------------------------

    def _batch_sums(self, batch: Batch, preds, batch_index, start):
        """Sums for the weighted total over outputs (what Keras reports as "loss") and per output."""
        preds_list = _as_list(preds, [o.name for o in self.outputs])
        ys = _as_list(batch.y, [o.name for o in self.outputs])
        per_output = {}
        for out in self.outputs:
            y_out, p_out = ys[out.index], preds_list[out.index]
            p_out = np.asarray(p_out)
            try:
                losses = out.per_token(y_out, p_out, self.flavour)
            except ValueError as exc:
                raise MaskLossInputError(f"output {out.name!r}: {exc}") from None
            if losses.ndim == 0 or losses.shape[0] != batch.size:
                raise MaskLossInputError(
                    f"output {out.name!r}: per-token losses of shape {losses.shape} for a batch of {batch.size}"
                )
            m = self._token_mask(batch, y_out, losses.shape, batch_index, start)
            ignore = valid_token_mask(out.spec, y_out) if out.spec is not None and out.fn is None else None
            if ignore is not None:
                m = m & ignore.reshape(m.shape)
            w = self._user_weights(batch, losses.shape)
            if np.any(~np.isfinite(losses[m])) and out.unwrapped and np.all(np.isfinite(p_out)):
                raise MaskLossInputError(
                    f"output {out.name!r}: a {out.unwrapped} probability underflowed to 0 at a real "
                    f"token of batch {batch_index}. Keras on TensorFlow computes this loss from the "
                    f"logits under the {out.unwrapped}, which the predictions cannot give back; "
                    "check a model with a linear output and a from_logits=True loss"
                )
            if np.any(~np.isfinite(losses[m])):
                raise MaskLossInputError(
                    f"output {out.name!r}: the model's predictions give a non-finite loss at "
                    f"{int(np.sum(~np.isfinite(losses[m])))} real token(s) of batch {batch_index}: NaN/inf in "
                    "the model's output (or labels out of range) — the check cannot judge the reduction"
                )
            finite = np.where(np.isfinite(losses), losses, 0.0)
            s = _BatchSums(size=batch.size)
            s.masked = float(np.sum(finite * w * m))
            s.weight = float(np.sum(w * m))
            # when the weights are the padding, "padding scored as real tokens" ignores them too
            s.unmasked = float(np.sum(finite * (1.0 if self._padding_from_weights(batch) else w)))
            s.positions = int(np.prod(losses.shape))
            s.real = int(np.sum(m))
            s.replica_means = _replica_means(finite * w * m, w * m, self.replicas)
            per_output[out.name] = s
        return per_output

    def _total(self, per_output):
        return _Total([(out.weight, per_output[out.name]) for out in self.outputs])

    def _padding_from_weights(self, batch):
        """Whether this batch's padding is its zero sample weights (given, or found by "auto")."""
        if self.pad_in == "sample_weight":
            return True
        return (self.pad_in == "auto" and batch.sample_weight is not None
                and bool(np.any(np.asarray(_first(batch.sample_weight)) == 0)))

    def _user_weights(self, batch, shape):
        if batch.sample_weight is None:
            return np.ones(shape)
        w = np.asarray(_first(batch.sample_weight), dtype=np.float64)
        if w.ndim == 1 and len(shape) == 2:
            w = w[:, None]
        return np.broadcast_to(w, shape)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Report:
        model = self.model
        state = _keras.snapshot(model)
        try:
            self._run(state)
        finally:
            _keras.restore(model, state)
        return self.report

    def _run(self, state):
        report = self.report
        model = self.model
        want_train = any(p in self.paths for p in ("train_on_batch", "fit"))
        eval_out = {o.name: _EpochSums() for o in self.outputs}
        train_out = {o.name: _EpochSums() for o in self.outputs}
        epoch_eval = self._total(eval_out)
        epoch_train = self._total(train_out)
        metric_epoch = {}
        train_mode = None  # "same", "separate" or a reason it cannot be compared
        reg = self._regularisation()
        start = 0
        for index, batch in enumerate(self.data.batches()):
            with self._timed("predict"):
                preds = self._predict(batch.x)
            with self._timed("reference"):
                per_output = self._batch_sums(batch, preds, index, start)
            total = self._total(per_output)
            for name, s in per_output.items():
                eval_out[name].add(s)
            if index == 0:
                self._note_output_mask(batch)
            logs = None
            if "test_on_batch" in self.paths or (self.metrics and index == 0):
                logs = _logs(model.test_on_batch(*batch_tuple(batch), return_dict=True))
                if index == 0:
                    self.metric_names = self._metric_names(logs) if self.metrics else []
            if "test_on_batch" in self.paths:
                self._compare_batch("test_on_batch", logs, total, index, reg)
                self._compare_metrics("test_on_batch", logs, batch, preds, f"batch {index}")
            with self._timed("reference"):
                self._accumulate_metrics(metric_epoch, batch, preds)
            if want_train:
                if train_mode is None:
                    train_mode = self._training_mode(batch)
                if train_mode == "same":
                    train_parts = per_output
                elif train_mode == "separate":
                    train_preds = _keras.to_numpy(model(batch.x, training=True))
                    _keras.restore_weights(model, state)  # undo BatchNorm-style statistic updates
                    train_parts = self._batch_sums(batch, train_preds, index, start)
                else:
                    train_parts = None
                if train_parts is not None:
                    for name, s in train_parts.items():
                        train_out[name].add(s)
                    train_total = self._total(train_parts)
                    if "train_on_batch" in self.paths:
                        logs = _logs(model.train_on_batch(*batch_tuple(batch), return_dict=True))
                        _keras.restore_weights(model, state)
                        self._compare_batch("train_on_batch", logs, train_total, index, reg)
            start += batch.size
        report.batches = epoch_eval.batches
        report.sequences = epoch_eval.sequences
        report.real_tokens = epoch_eval.real
        report.total_tokens = epoch_eval.positions
        report.token_mean = epoch_eval.token_mean() + reg
        report.sequence_weighted_mean = epoch_eval.seq_weighted("reference") + reg
        self._check_padding_present(epoch_eval)

        if "evaluate" in self.paths:
            with self._timed("evaluate"):
                logs = _logs(model.evaluate(**self.data.keras_kwargs(), verbose=0, return_dict=True))
            self._compare_epoch("evaluate", logs.get("loss"), "loss", epoch_eval, reg,
                                granularity=self._loss_granularity(logs))
            if len(self.outputs) > 1:
                for out in self.outputs:
                    key = f"{out.name}_loss"
                    if key in logs:
                        self._compare_epoch("evaluate", logs[key], key, eval_out[out.name], 0.0)
            if self.metrics:
                self._compare_epoch_metrics("evaluate", logs, metric_epoch)
        if want_train and train_mode not in ("same", "separate"):
            for p in ("train_on_batch", "fit"):
                if p in self.paths:
                    report.skipped[p] = train_mode
        elif "fit" in self.paths:
            spe = _keras.steps_per_execution(model)
            if spe > 1:
                report.skipped["fit"] = (
                    f"steps_per_execution={spe}: the weights change between callbacks, so the "
                    "epoch figure cannot be recomputed from one set of weights"
                )
            else:
                hold = _keras.hold_weights_callback(self.info, model, state)
                kwargs = self.data.keras_kwargs()
                kwargs["shuffle"] = False
                kwargs["steps_per_epoch"] = kwargs.pop("steps", None)
                if kwargs["steps_per_epoch"] is None:
                    kwargs.pop("steps_per_epoch")
                with self._timed("fit"):
                    history = model.fit(**kwargs, epochs=1, verbose=0, callbacks=[hold])
                reported = history.history.get("loss", [float("nan")])[-1]
                self._compare_epoch("fit", reported, "loss", epoch_train, reg)

    def _predict(self, x):
        if self.replicas > 1:
            # predict_on_batch under a tf.distribute strategy returns per-replica pieces joined
            # in ways that vary by version; a direct call runs the whole batch on one device
            return _keras.to_numpy(self.model(x, training=False))
        return _keras.to_numpy(self.model.predict_on_batch(x))

    def _regularisation(self):
        """Σ model.losses (weight regularisers) as Keras adds them to the reported loss."""
        losses = list(getattr(self.model, "losses", []) or [])
        if not losses:
            return 0.0
        return float(sum(float(_keras.to_numpy(l)) for l in losses))

    def _training_mode(self, batch):
        """Can the training forward pass be compared exactly? "same" when it equals inference,
        "separate" when it differs but deterministically, else the reason it cannot."""
        model = self.model
        stochastic = [l.name for l in _keras._all_layers(model)
                      if type(l).__name__ in _STOCHASTIC and float(getattr(l, "rate", getattr(l, "stddev", 1)) or 0) > 0]
        if stochastic:
            return (
                f"the training forward pass is stochastic (layer {stochastic[0]!r} is "
                f"{type(_find_layer(model, stochastic[0])).__name__}): a training-mode loss "
                "cannot be recomputed exactly, and no loose tolerance is used instead"
            )
        inference = self._predict(batch.x)
        state = _keras.snapshot(model)
        first = _keras.to_numpy(model(batch.x, training=True))
        second = _keras.to_numpy(model(batch.x, training=True))
        _keras.restore_weights(model, state)
        if not _allclose(first, second):
            return "the training forward pass is not deterministic: it cannot be recomputed exactly"
        return "same" if _allclose(first, inference) else "separate"

    def _note_output_mask(self, batch):
        """Records whether a mask reaches the output (for telling mask-lost from loss-ignores-mask)."""
        self.output_has_mask = False
        self.mask_dropper = None
        if not self.mask_sources:
            return
        try:
            out = self.model(batch.x, training=False)
        except Exception:
            return
        outs = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
        self.output_has_mask = any(_keras.get_mask(self.info, o) is not None for o in outs)
        if not self.output_has_mask:
            try:
                self.mask_dropper = _keras.first_mask_dropper(self.info, self.model, batch.x)
            except Exception:
                self.mask_dropper = None

    def _check_padding_present(self, epoch: _EpochSums):
        if epoch.real == epoch.positions and self.pad_in != "mask":
            where = self.report.padding
            raise MaskLossInputError(
                f"no padding found: none of the {epoch.positions} positions in {epoch.batches} "
                f"batch(es) has {where}. Nothing is padded, so there is nothing to check; "
                "pass pad_id=<your pad id>, pad_in='labels'|'inputs'|'sample_weight', or mask=..."
            )

    # -- comparisons ----------------------------------------------------------------------

    def _unmasked_mode(self):
        if self.mask_sources and self.output_has_mask:
            return "loss-ignores-mask", ""
        if self.mask_sources:
            return "mask-lost", (
                f"layer {self.mask_dropper!r} drops the mask" if self.mask_dropper
                else "the mask does not reach the output"
            )
        return "mask-lost", "no mask reaches the loss: the model has no mask source and no zero sample_weight"

    def _mode_of(self, key):
        if key == "unmasked":
            return self._unmasked_mode()[0]
        if key in ("empty-batch-nan", "empty-batch-zero"):
            return "empty-batch"
        if key == "epoch-mean-of-batches":
            return "epoch-weighted-by-sequences"
        return key

    def _detail(self, mode):
        if mode in ("mask-lost", "loss-ignores-mask"):
            return self._unmasked_mode()[1]
        return ""

    def _compare_batch(self, path, logs, total: _BatchSums, index, reg):
        reported = logs.get("loss")
        if reported is None:
            return
        if total.weight <= 0:
            # a batch without a real token has no mean: a finite figure for it is harmless by
            # itself (the epoch figure is judged separately), a NaN poisons every aggregate
            if math.isfinite(reported):
                note = (f"{path}: batch {index} holds no real token; Keras reports {reported:.7g} "
                        "for it and counts its sequences in epoch figures")
                self.report.notes.append(note)
                return
            comp = Comparison(path, "loss", f"batch {index}", reported, float("nan"), False, "empty-batch",
                              "empty-batch-nan", [Candidate("empty-batch-nan", float("nan"))],
                              total.real, total.positions, detail="the batch holds no real token")
            self.report.comparisons.append(comp)
            return
        expected = total.ref() + reg
        cands = [
            Candidate("padding-in-denominator", total.pad_denominator() + reg),
            Candidate("unmasked", total.unmasked_mean() + reg),
        ]
        if self.replicas > 1:
            cands.append(Candidate("replicas-weighted-equally", total.replica_mean() + reg))
        self._add(path, "loss", f"batch {index}", reported, expected, cands, total.real, total.positions)

    def _loss_granularity(self, logs):
        """At token granularity a token-level epoch figure must be reported. Keras' epoch loss
        is always sequence-weighted, so a compiled TokenMeanLoss/TokenPerplexity metric
        (pytest_maskloss.keras) provides it instead: the loss is then judged per batch and the
        metric against the token mean."""
        if self.granularity == "token" and any(self._token_metric(n) for n in logs):
            note = ("granularity='token': the epoch loss is judged as Keras aggregates it; the "
                    "token-level figure is the compiled token metric, judged against the token mean")
            if note not in self.report.notes:
                self.report.notes.append(note)
            return "batch"
        return self.granularity

    def _token_metric(self, name):
        base = name.split("_", 1)[1] if len(self.outputs) > 1 and "_" in name else name
        return name in _TOKEN_METRICS or base in _TOKEN_METRICS

    def _compare_epoch(self, path, reported, quantity, epoch: _EpochSums, reg, granularity=None):
        if reported is None:
            return
        granularity = granularity or self.granularity
        token = epoch.token_mean() + reg
        by_seq = {k: epoch.seq_weighted(k) + reg for k in _EPOCH_KEYS}
        expected = token if granularity == "token" else by_seq["reference"]
        cands = []
        if epoch.empty_batches:  # most specific first: an empty batch also zeroes other formulas
            cands.append(Candidate("empty-batch-nan", by_seq["empty-batch-nan"]))
            cands.append(Candidate("empty-batch-zero", by_seq["empty-batch-zero"]))
        if granularity == "token":
            cands.append(Candidate("epoch-weighted-by-sequences", by_seq["reference"]))
            cands.append(Candidate("epoch-mean-of-batches", epoch.mean_of_batch_means() + reg))
        cands.append(Candidate("padding-in-denominator", by_seq["padding-in-denominator"]))
        cands.append(Candidate("unmasked", by_seq["unmasked"]))
        if self.replicas > 1:
            cands.append(Candidate("replicas-weighted-equally", by_seq["replicas-weighted-equally"]))
        scope = f"epoch, {epoch.batches} batches"
        self._add(path, quantity, scope, float(reported), expected, cands, epoch.real, epoch.positions)
        if granularity == "batch" and not math.isclose(token, by_seq["reference"], rel_tol=self.rtol):
            note = (
                f"{path}: the epoch {quantity} {float(reported):.7g} is Keras' mean of batch means "
                f"weighted by sequences; the mean over real tokens is {token:.7g} "
                f"(exp: {math.exp(min(token, 700)):.7g}). granularity='token' makes this a failure."
            )
            if note not in self.report.notes:
                self.report.notes.append(note)

    def _add(self, path, quantity, scope, reported, expected, cands, real, positions):
        reported = float(reported)
        verdict = judge(reported, expected, cands, self.rtol, self.atol, mode_of=self._mode_of)
        mode = verdict.mode
        self.report.comparisons.append(
            Comparison(path, quantity, scope, reported, expected, verdict.ok, mode, verdict.matched,
                       cands, real, positions, detail=self._detail(mode) if mode else "")
        )

    # -- metrics ----------------------------------------------------------------------------

    def _metric_values(self, name, batch, preds):
        """Per-token values of a metric Keras logs under ``name`` (None if not one we model)."""
        out = self._metric_output(name)
        if out is None:
            return None
        base = name[len(out.name) + 1:] if name.startswith(out.name + "_") and len(self.outputs) > 1 else name
        ys = _as_list(batch.y, [o.name for o in self.outputs])
        ps = _as_list(preds, [o.name for o in self.outputs])
        y_out, p_out = np.asarray(ys[out.index]), np.asarray(ps[out.index])
        if base in _ACCURACY_NAMES:
            return _accuracy(base, out.spec, y_out, p_out), out, y_out
        if base in _TOKEN_METRICS:  # this package's token metrics: the output's own loss per token
            return out.per_token(y_out, p_out, self.flavour), out, y_out
        if base in _CROSSENTROPY_NAMES:
            spec = LossSpec(name=base)
            return per_token_loss(spec, y_out, p_out, flavour=self.flavour, unwrapped_activation=out.unwrapped), out, y_out
        return None

    def _metric_output(self, name):
        if len(self.outputs) == 1:
            return self.outputs[0]
        for out in self.outputs:
            if name.startswith(out.name + "_"):
                return out
        return None

    def _metric_names(self, logs):
        skip = {"loss"} | {f"{o.name}_loss" for o in self.outputs}
        return [k for k in logs if k not in skip]

    def _metric_sums(self, name, batch, preds):
        got = self._metric_values(name, batch, preds)
        if got is None:
            return None
        values, out, y_out = got
        values = np.asarray(values, dtype=np.float64)
        m = self._token_mask(batch, y_out, values.shape, 0, 0)
        w = self._user_weights(batch, values.shape)
        return (float(np.sum(values * w * m)), float(np.sum(w * m)), float(np.sum(values)), values.size, int(m.sum()))

    def _compare_metrics(self, path, logs, batch, preds, scope):
        for name in self.metric_names:
            sums = self._metric_sums(name, batch, preds)
            if sums is None or sums[1] <= 0:
                continue
            masked, weight, unmasked, n, real = sums
            expected, unmasked_mean = _metric_means(name, masked, weight, unmasked, n)
            self._add_metric(path, name, scope, logs[name], expected, unmasked_mean, real, n)

    def _accumulate_metrics(self, acc, batch, preds):
        for name in self.metric_names:
            sums = self._metric_sums(name, batch, preds)
            if sums is None:
                continue
            prev = acc.get(name, (0.0, 0.0, 0.0, 0, 0))
            acc[name] = tuple(a + b for a, b in zip(prev, sums))

    def _compare_epoch_metrics(self, path, logs, acc):
        for name in self._metric_names(logs):
            if name not in acc:
                continue
            masked, weight, unmasked, n, real = acc[name]
            if weight <= 0:
                continue
            expected, unmasked_mean = _metric_means(name, masked, weight, unmasked, n)
            self._add_metric(path, name, f"epoch, {self.report.batches} batches", logs[name],
                             expected, unmasked_mean, real, n)

    def _add_metric(self, path, name, scope, reported, expected, unmasked, real, n):
        reported = float(reported)
        cands = [Candidate("unmasked", unmasked)]
        verdict = judge(reported, expected, cands, self.rtol, self.atol,
                        mode_of=lambda key: "metric-counts-padding")
        self.report.comparisons.append(
            Comparison(path, name, scope, reported, expected, verdict.ok, verdict.mode, verdict.matched,
                       cands, real, n, detail=f"metric {name!r} counts padding" if verdict.mode == "metric-counts-padding" else "")
        )


_STOCHASTIC = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "RandomZoom", "RandomFlip", "RandomRotation",
}


def _metric_means(name, masked, weight, unmasked, count):
    """A metric's masked reference and its unmasked value (exp of both for a perplexity)."""
    expected, unmasked_mean = masked / weight, unmasked / count
    if name.endswith("token_perplexity"):
        return math.exp(min(expected, 700)), math.exp(min(unmasked_mean, 700))
    return expected, unmasked_mean


def _find_layer(model, name):
    return next(l for l in _keras._all_layers(model) if l.name == name)


def _accuracy(name, spec, y, p):
    loss_name = spec.name if spec is not None else ""
    if name in ("accuracy", "acc"):
        if "binary" in loss_name:
            name = "binary_accuracy"
        elif loss_name == "categorical_crossentropy" or (y.ndim == p.ndim and y.shape[-1] == p.shape[-1] and p.shape[-1] > 1):
            name = "categorical_accuracy"
        else:
            name = "sparse_categorical_accuracy"
    if name == "sparse_categorical_accuracy":
        labels = y[..., 0] if y.ndim == p.ndim else y
        return (np.argmax(p, axis=-1) == labels).astype(np.float64)
    if name == "categorical_accuracy":
        return (np.argmax(p, axis=-1) == np.argmax(y, axis=-1)).astype(np.float64)
    return np.mean((p > 0.5) == (y > 0.5), axis=-1).astype(np.float64)


def _replica_means(weighted_losses, weights, replicas):
    if replicas <= 1:
        return []
    means = []
    for part_l, part_w in zip(np.array_split(weighted_losses, replicas), np.array_split(weights, replicas)):
        w = float(np.sum(part_w))
        means.append(float(np.sum(part_l)) / w if w > 0 else float("nan"))
    return means


class _Total:
    """Keras' total loss is Σ_k weight_k · (output k's reduced loss): every formula of the
    total is the same weighted sum of that formula over the outputs (batch or epoch sums)."""

    def __init__(self, parts):
        self.parts = parts  # [(weight, _BatchSums or _EpochSums)]

    def __getattr__(self, name):
        if name in ("size", "sequences", "batches", "empty_batches", "nonempty_sequences"):
            return getattr(self.parts[0][1], name)
        if name in ("real", "positions"):
            return sum(getattr(s, name) for _, s in self.parts)
        if name == "weight":
            return min(s.weight for _, s in self.parts)
        formula = getattr(self.parts[0][1], name)
        if not callable(formula):
            raise AttributeError(name)
        return lambda *args: sum(w * getattr(s, name)(*args) for w, s in self.parts)


def _as_list(structure, names):
    if isinstance(structure, dict):
        return [structure.get(n) for n in names] if all(n in structure for n in names) else list(structure.values())
    if isinstance(structure, (list, tuple)):
        return list(structure)
    return [structure]


def _first(sw):
    if isinstance(sw, dict):
        return next(iter(sw.values()))
    if isinstance(sw, (list, tuple)):
        return sw[0]
    return sw


def _logs(result):
    if isinstance(result, dict):
        return {k: float(np.asarray(_keras.to_numpy(v)).reshape(-1)[0]) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return {"loss": float(result[0])}
    return {"loss": float(result)}


def _allclose(a, b):
    a_list = a if isinstance(a, (list, tuple)) else list(a.values()) if isinstance(a, dict) else [a]
    b_list = b if isinstance(b, (list, tuple)) else list(b.values()) if isinstance(b, dict) else [b]
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7) for x, y in zip(a_list, b_list))


def _loss_weights(model, names):
    for holder in (getattr(model, "_compile_loss", None), getattr(model, "compiled_loss", None)):
        weights = getattr(holder, "_user_loss_weights", None) if holder is not None else None
        if weights is None:
            continue
        if isinstance(weights, dict):
            return {k: float(v) for k, v in weights.items()}
        if isinstance(weights, (list, tuple)):
            return {n: float(w) for n, w in zip(names, weights)}
    return {}


def _describe_loss(loss):
    name = getattr(loss, "__name__", None) or type(loss).__name__
    module = getattr(loss, "__module__", None) or type(loss).__module__
    return f"{module}.{name}"
