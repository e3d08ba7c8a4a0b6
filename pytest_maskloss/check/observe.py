"""Observing a model's own call: every step the tap reports becomes the masked-reference sums of
the batch that step saw (from its own predictions), grouped into the periods Keras reports on
(an epoch of ``fit``, its validation, one ``evaluate``), and judged per step as it arrives.

Only sums are kept per period, so memory does not grow with the number of batches; the
predictions of a step are dropped once its sums are taken. A step that sent per-token statistics
of a sparse cross-entropy instead of its predictions (``compat.tokenstats``) is reduced from
those (``check.tokenstats``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pytest_maskloss.check.data import Batch, leading_dim
from pytest_maskloss.check.outputs import as_list
from pytest_maskloss.check.reference import negative_labels, valid_token_mask
from pytest_maskloss.check.sums import BatchSums, EpochSums, RunningLoss, Total, replica_means
from pytest_maskloss.check.tokenstats import per_token_from_statistics, prediction_ndim
from pytest_maskloss.compat.hostcopy import map_leaves
from pytest_maskloss.errors import MaskLossInputError


@dataclass
class Period:
    """The steps between two metric resets: one epoch of fit, one validation, one evaluate."""

    phase: str | None = None  # "train" or "test", from its first step
    outputs: dict = field(default_factory=dict)  # output name -> EpochSums
    metrics: dict = field(default_factory=dict)  # metric name -> (Σ v·w·m, Σ w·m, Σ v, n, real)
    steps: int = 0
    reported: list = field(default_factory=list)  # (batch size, what compute_loss returned)
    masked_output: bool = False


class Recorder:
    """Receives the tap's records (see ``compat.tap.LossTap``) for one observed call."""

    def __init__(self, outputs, padding, stack, metrics, judge, *, per_token_loss_fn=None,
                 replicas=1, path="evaluate"):
        self.outputs = outputs
        self.padding = padding
        self.stack = stack
        self.metrics = metrics
        self.judge = judge
        self.replicas = replicas
        self.path = path
        self.periods = [Period()]
        self.errors = []
        self.input_error = None  # a MaskLossInputError found in a step, raised after the call
        self.first_batch = None  # a batch seen by the first step (for the mask-dropper probe)
        self.seconds = 0.0  # spent on the host computing the reference
        self.judge_steps = True  # judge each step's own loss as it arrives
        self.step_totals = []  # *_on_batch: each step's (Total, added losses, own loss, running mean)
        self.running = None  # RunningLoss where *_on_batch may return Keras' running mean
        self.observed = set()  # what the steps sent: "token statistics", "predictions", ...
        self._pending = []  # replica records of the step being gathered

    @property
    def period(self) -> Period:
        return self.periods[-1]

    def follow_tracker(self, state):
        """Follow Keras' loss tracker from ``state`` ((Σ B·loss, Σ B), or None for empty)."""
        self.running = RunningLoss(*(state or (0.0, 0.0)))

    def new_period(self):
        self._gather(force=True)
        if self.running is not None:  # Keras reset its metrics, the loss tracker with them
            self.running.reset()
        if self.period.steps:
            self.periods.append(Period())

    def finish(self):
        self._gather(force=True)
        return [p for p in self.periods if p.steps]

    # -- one step -----------------------------------------------------------------------

    def on_step(self, record):
        start = time.perf_counter()
        try:
            self._on_step(record)
        finally:
            self.seconds += time.perf_counter() - start

    def _on_step(self, record):
        if self.replicas > 1:
            self._pending.append(record)
            self._gather()
            return
        self._step([record])

    def _gather(self, force=False):
        """tf.distribute reports a step once per replica: a step is complete when each replica
        has reported (or at a period's end)."""
        if not self._pending:
            return
        ids = [r["replica"] for r in self._pending]
        if force or len(set(ids)) >= self.replicas:
            records, self._pending = self._pending, []
            self._step(records)

    def _step(self, records):
        try:
            self._take(records)
        except MaskLossInputError as exc:  # raised after the call, not into the model's step
            if self.input_error is None:
                self.input_error = exc
        except Exception as exc:  # never lose the call to a bug of ours: the report says so
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _take(self, records):
        period = self.period
        self.observed.update(_sent(r) for r in records)
        parts = [self._sums(r) for r in records]
        per_output = {out.name: _merge([p[out.name] for p in parts]) for out in self.outputs}
        if len(parts) > 1:  # each replica's masked mean, for replicas-weighted-equally
            for name in per_output:
                per_output[name].replica_means = [p[name].ref() for p in parts]
        added = sum(_scalar(r.get("added")) for r in records) / len(records)
        first = records[0]
        if period.phase is None:
            period.phase = first["phase"]
        for name, s in per_output.items():
            period.outputs.setdefault(name, EpochSums()).add(s, added)
        period.steps += 1
        period.masked_output = period.masked_output or first.get("mask") is not None
        batch = _batch(records)
        if self.first_batch is None:  # kept past the step: a copy (the step's arrays are views)
            self.first_batch = Batch(*(_copy(v) for v in (batch.x, batch.y, batch.sample_weight)))
            self.judge.output_has_mask = first.get("mask") is not None
        total = Total([(out.weight, per_output[out.name]) for out in self.outputs])
        if not self.judge_steps:
            own = _scalar(first["loss"]) if len(records) == 1 else None
            running = self.running.add(_size(batch), own) if self.running is not None and own is not None else None
            self.step_totals.append((total, added, own, running))
        elif len(records) == 1:  # a replica's own figure is scaled by version-specific rules
            reported = _scalar(first["loss"])
            period.reported.append((_size(batch), reported))
            self.judge.batch(self.path, {"loss": reported}, total, self._scope(period), added)
        preds = _stack_predictions(records)
        if self.metrics.names and preds is not None:
            self.metrics.accumulate(batch, preds, into=period.metrics)

    def _scope(self, period) -> str:
        where = f"batch {period.steps - 1}"
        if self.path != "fit":
            return where
        epoch = sum(1 for p in self.periods if p.phase == "train" and p.steps)
        return ("validation " if period.phase == "test" else "") + f"{where} of epoch {epoch}"

    def _sums(self, record):
        """BatchSums of one replica's (or the whole) batch, per output."""
        batch = Batch(record.get("x"), record.get("y"), record.get("sample_weight"))
        names = [o.name for o in self.outputs]
        ys = as_list(batch.y, names)
        preds = as_list(record.get("y_pred"), names) if record.get("y_pred") is not None else [None] * len(names)
        in_step = as_list(record.get("per_token"), names) if record.get("per_token") is not None else None
        stats = record.get("stats")  # a list, one entry per output
        size = leading_dim(batch.y) if batch.y is not None else 0
        sums = {}
        for out in self.outputs:
            y_out = ys[out.index]
            stat = stats[out.index] if stats is not None else None
            p_out = preds[out.index]
            losses = self._per_token(out, y_out, p_out, in_step, stat)
            m = self.padding.token_mask(batch, y_out, losses.shape)
            ignore = valid_token_mask(out.spec, y_out) if out.spec is not None and out.fn is None else None
            if ignore is not None:
                m = m & ignore.reshape(m.shape)
            rank = prediction_ndim(stat) if stat is not None else None if p_out is None else np.ndim(p_out)
            self._negative_labels(out, y_out, rank, m)
            w = self.padding.user_weights(batch, losses.shape)
            _refuse_non_finite(out, losses, m, p_out)
            finite = np.where(np.isfinite(losses), losses, 0.0)
            s = BatchSums(size=size)
            s.masked = float(np.sum(finite * w * m))
            s.weight = float(np.sum(w * m))
            # when the weights are the padding, "padding scored as real tokens" ignores them too
            s.unmasked = float(np.sum(finite * (1.0 if self.padding.from_weights(batch) else w)))
            s.positions = int(np.prod(losses.shape))
            s.real = int(np.sum(m))
            s.replica_means = replica_means(finite * w * m, w * m, 1)
            sums[out.name] = s
        return sums

    def _negative_labels(self, out, y_out, rank, m):
        """Negative sparse labels (``-100``/``-1`` padding without ``ignore_class``): refused at
        real tokens, remembered for the diagnosis at padding (Keras on JAX/PyTorch scores them 0
        and counts them in the divisor). ``rank``: the predictions' rank."""
        if out.spec is None or out.fn is not None or rank is None:
            return
        negative = negative_labels(out.spec, y_out, rank)
        if negative is None:
            return
        negative = negative.reshape(m.shape)
        values = np.asarray(y_out).reshape(m.shape)[negative]
        if np.any(negative & m):
            raise MaskLossInputError(
                f"output {out.name!r}: {int(np.sum(negative & m))} real token(s) have a negative "
                f"label ({sorted({int(v) for v in values})}): if that label is your padding, pass "
                "pad_id=<it> (pad_in='labels') to the check; compile the loss with "
                "ignore_class=<it> to have Keras leave it out"
            )
        self.judge.negative_padding_labels.update(int(v) for v in np.unique(values))

    def _per_token(self, out, y_out, p_out, in_step, stat):
        if out.fn is not None:  # per_token_loss_fn: the caller's numpy reference
            return np.asarray(out.fn(np.asarray(y_out), np.asarray(p_out)), dtype=np.float64)
        if out.spec is not None and stat is not None:  # the step's statistics, reduced in numpy
            return per_token_from_statistics(out.spec, y_out, stat, self.stack)
        if out.spec is not None:  # a stock loss: the independent numpy reference
            return out.per_token(y_out, np.asarray(p_out), self.stack)
        if in_step is None:
            raise MaskLossInputError(f"output {out.name!r}: the custom loss was not evaluated per token")
        return np.asarray(in_step[out.index], dtype=np.float64)


def _refuse_non_finite(out, losses, m, p_out):
    bad = ~np.isfinite(losses[m])
    if not np.any(bad):
        return
    if out.unwrapped and p_out is not None and np.all(np.isfinite(p_out)):
        raise MaskLossInputError(
            f"output {out.name!r}: a {out.unwrapped} probability underflowed to 0 at a real "
            f"token. Keras on TensorFlow computes this loss from the logits under the "
            f"{out.unwrapped}, which the predictions cannot give back; check a model with a "
            "linear output and a from_logits=True loss"
        )
    raise MaskLossInputError(
        f"output {out.name!r}: the model's predictions give a non-finite loss at "
        f"{int(np.sum(bad))} real token(s): NaN/inf in the model's output (or labels out of "
        "range) — the check cannot judge the reduction"
    )


def _sent(record) -> str:
    """What a step handed to the host for the reference."""
    if record.get("stats") is not None:
        return "token statistics"
    if record.get("y_pred") is not None:
        return "predictions"
    return "per-token losses"


def _size(batch) -> int:
    """Sequences in the batch; the inputs are not sent when the padding is in the labels."""
    return batch.size if batch.x is not None else leading_dim(batch.y)


def _merge(parts) -> BatchSums:
    total = BatchSums(size=sum(p.size for p in parts))
    for p in parts:
        total.masked += p.masked
        total.weight += p.weight
        total.unmasked += p.unmasked
        total.positions += p.positions
        total.real += p.real
    return total


def _scalar(value) -> float:
    if value is None:
        return 0.0
    return float(np.sum(np.asarray(value, dtype=np.float64)))


def _batch(records) -> Batch:
    """The whole step's batch (replicas concatenated in replica order)."""
    records = sorted(records, key=lambda r: r["replica"])
    if len(records) == 1:
        r = records[0]
        return Batch(r.get("x"), r.get("y"), r.get("sample_weight"))
    return Batch(*(_concat([r.get(k) for r in records]) for k in ("x", "y", "sample_weight")))


def _stack_predictions(records):
    records = sorted(records, key=lambda r: r["replica"])
    if records[0].get("y_pred") is None:
        return None
    return _concat([r["y_pred"] for r in records]) if len(records) > 1 else records[0]["y_pred"]


def _copy(value):
    return map_leaves(lambda v: None if v is None else np.array(v), value)


def _concat(parts):
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, dict):
        return {k: _concat([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate([np.asarray(p) for p in parts], axis=0)
