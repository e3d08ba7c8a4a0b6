"""One check run: the model's own reporting paths on the data, batch by batch, against the
masked reference from its predictions; the caller's model left as it was found.

Flow: read the data batch by batch (data) → per-token losses in numpy (outputs, reference) and
the padding mask (padding) → sums per batch and per epoch (sums) → each path's reported
figures judged against them (compare, metrics) → a Report.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from pytest_maskloss.check.compare import Judge
from pytest_maskloss.check.data import Batch, DataSource, batch_tuple
from pytest_maskloss.check.metrics import Metrics
from pytest_maskloss.check.outputs import as_list, resolve_outputs
from pytest_maskloss.check.padding import Padding
from pytest_maskloss.check.reference import valid_token_mask
from pytest_maskloss.check.report import Report
from pytest_maskloss.check.sums import BatchSums, EpochSums, Total, replica_means
from pytest_maskloss.compat import masks, model as M, state as S
from pytest_maskloss.errors import MaskLossInputError

TRAINING_PATHS = ("train_on_batch", "fit")


class CheckRun:
    def __init__(self, model, info, data: DataSource, *, pad_id, pad_in, mask, per_token_loss_fn,
                 paths, granularity, rtol, atol, metrics):
        self.model = model
        self.info = info
        self.stack = info.stack
        self.data = data
        self.paths = tuple(paths)
        self.outputs = resolve_outputs(model, self.stack, per_token_loss_fn)
        self.mask_sources = masks.mask_source_layers(model)
        self.padding = Padding(pad_in, pad_id, mask, self.mask_sources)
        self.replicas = M.num_replicas(model)
        self.want_metrics = metrics
        self.report = Report(
            keras=info.label,
            loss="; ".join(f"{o.name}: {o.loss_text}" if len(self.outputs) > 1 else o.loss_text for o in self.outputs),
            data=data.describe(),
            padding=self.padding.description,
            granularity=granularity,
            rtol=rtol,
            atol=atol,
        )
        self.judge = Judge(self.report, rtol=rtol, atol=atol, granularity=granularity,
                           replicas=self.replicas, output_names=[o.name for o in self.outputs])
        self.judge.has_mask_source = bool(self.mask_sources)
        self.metrics = Metrics(self.outputs, self.stack, self.padding, self.judge)

    @contextmanager
    def _timed(self, what):
        start = time.perf_counter()
        try:
            yield
        finally:
            timings = self.report.timings
            timings[what] = timings.get(what, 0.0) + time.perf_counter() - start

    def run(self) -> Report:
        S.build_optimizer(self.model)
        state = S.snapshot(self.model)
        try:
            self._run(state)
        finally:
            S.restore(self.model, state)
        return self.report

    # -- per-batch sums -----------------------------------------------------------------------

    def _batch_sums(self, batch: Batch, preds, batch_index, start):
        """Sums for each output (their weighted total is what Keras reports as "loss")."""
        names = [o.name for o in self.outputs]
        preds_list, ys = as_list(preds, names), as_list(batch.y, names)
        per_output = {}
        for out in self.outputs:
            y_out, p_out = ys[out.index], np.asarray(preds_list[out.index])
            try:
                losses = out.per_token(y_out, p_out, self.stack)
            except ValueError as exc:
                raise MaskLossInputError(f"output {out.name!r}: {exc}") from None
            if losses.ndim == 0 or losses.shape[0] != batch.size:
                raise MaskLossInputError(
                    f"output {out.name!r}: per-token losses of shape {losses.shape} for a batch of {batch.size}"
                )
            m = self.padding.token_mask(batch, y_out, losses.shape, start)
            ignore = valid_token_mask(out.spec, y_out) if out.spec is not None and out.fn is None else None
            if ignore is not None:
                m = m & ignore.reshape(m.shape)
            w = self.padding.user_weights(batch, losses.shape)
            _refuse_non_finite(out, losses, m, p_out, batch_index)
            finite = np.where(np.isfinite(losses), losses, 0.0)
            s = BatchSums(size=batch.size)
            s.masked = float(np.sum(finite * w * m))
            s.weight = float(np.sum(w * m))
            # when the weights are the padding, "padding scored as real tokens" ignores them too
            s.unmasked = float(np.sum(finite * (1.0 if self.padding.from_weights(batch) else w)))
            s.positions = int(np.prod(losses.shape))
            s.real = int(np.sum(m))
            s.replica_means = replica_means(finite * w * m, w * m, self.replicas)
            per_output[out.name] = s
        return per_output

    def _total(self, per_output):
        return Total([(out.weight, per_output[out.name]) for out in self.outputs])

    # -- the run --------------------------------------------------------------------------

    def _run(self, state):
        report, model, judge = self.report, self.model, self.judge
        want_train = any(p in self.paths for p in TRAINING_PATHS)
        eval_out = {o.name: EpochSums() for o in self.outputs}
        train_out = {o.name: EpochSums() for o in self.outputs}
        epoch_eval, epoch_train = self._total(eval_out), self._total(train_out)
        train_mode = None  # "same", "separate" or a reason it cannot be compared
        reg = M.regularisation(model)
        start = 0
        for index, batch in enumerate(self.data.batches()):
            with self._timed("predict"):
                preds = M.predict(model, batch.x)
            with self._timed("reference"):
                per_output = self._batch_sums(batch, preds, index, start)
            total = self._total(per_output)
            for name, s in per_output.items():
                eval_out[name].add(s)
            if index == 0:
                self._note_output_mask(batch)
            logs = None
            if "test_on_batch" in self.paths or (self.want_metrics and index == 0):
                logs = logs_of(model.test_on_batch(*batch_tuple(batch), return_dict=True))
                if index == 0 and self.want_metrics:
                    self.metrics.names = self.metrics.logged(logs)
            if "test_on_batch" in self.paths:
                judge.batch("test_on_batch", logs, total, index, reg)
                self.metrics.compare_batch("test_on_batch", logs, batch, preds, f"batch {index}", start)
            with self._timed("reference"):
                self.metrics.accumulate(batch, preds, start)
            if want_train:
                if train_mode is None:
                    train_mode = self._training_mode(batch)
                train_parts = None
                if train_mode == "same":
                    train_parts = per_output
                elif train_mode == "separate":
                    train_preds = M.to_numpy(model(batch.x, training=True))
                    S.restore_weights(model, state)  # undo BatchNorm-style statistic updates
                    train_parts = self._batch_sums(batch, train_preds, index, start)
                if train_parts is not None:
                    for name, s in train_parts.items():
                        train_out[name].add(s)
                    if "train_on_batch" in self.paths:
                        logs = logs_of(model.train_on_batch(*batch_tuple(batch), return_dict=True))
                        S.restore_weights(model, state)
                        judge.batch("train_on_batch", logs, self._total(train_parts), index, reg)
            start += batch.size
        report.padding = self.padding.description
        report.batches, report.sequences = epoch_eval.batches, epoch_eval.sequences
        report.real_tokens, report.total_tokens = epoch_eval.real, epoch_eval.positions
        report.token_mean = epoch_eval.token_mean() + reg
        report.sequence_weighted_mean = epoch_eval.seq_weighted("reference") + reg
        self._check_padding_present(epoch_eval)
        if "evaluate" in self.paths:
            self._evaluate(eval_out, epoch_eval, reg)
        if want_train and train_mode not in ("same", "separate"):
            for p in TRAINING_PATHS:
                if p in self.paths:
                    report.skipped[p] = train_mode
        elif "fit" in self.paths:
            self._fit(state, epoch_train, reg)

    def _evaluate(self, eval_out, epoch_eval, reg):
        with self._timed("evaluate"):
            logs = logs_of(self.model.evaluate(**self.data.keras_kwargs(), verbose=0, return_dict=True))
        self.judge.epoch("evaluate", logs.get("loss"), "loss", epoch_eval, reg,
                         granularity=self.judge.loss_granularity(logs))
        if len(self.outputs) > 1:
            for out in self.outputs:
                key = f"{out.name}_loss"
                if key in logs:
                    self.judge.epoch("evaluate", logs[key], key, eval_out[out.name], 0.0)
        if self.want_metrics:
            self.metrics.compare_epoch("evaluate", logs, self.report.batches)

    def _fit(self, state, epoch_train, reg):
        spe = M.steps_per_execution(self.model)
        if spe > 1:
            self.report.skipped["fit"] = (
                f"steps_per_execution={spe}: the weights change between callbacks, so the "
                "epoch figure cannot be recomputed from one set of weights"
            )
            return
        hold = S.hold_weights_callback(self.info, self.model, state)
        kwargs = self.data.keras_kwargs()
        kwargs["shuffle"] = False
        steps = kwargs.pop("steps", None)
        if steps is not None:
            kwargs["steps_per_epoch"] = steps
        with self._timed("fit"):
            history = self.model.fit(**kwargs, epochs=1, verbose=0, callbacks=[hold])
        reported = history.history.get("loss", [float("nan")])[-1]
        self.judge.epoch("fit", reported, "loss", epoch_train, reg)

    def _training_mode(self, batch):
        """Can the training forward pass be compared exactly? "same" when it equals inference,
        "separate" when it differs but deterministically, else the reason it cannot."""
        model = self.model
        stochastic = M.stochastic_layers(model)
        if stochastic:
            return (
                f"the training forward pass is stochastic (layer {stochastic[0].name!r} is "
                f"{type(stochastic[0]).__name__}): a training-mode loss "
                "cannot be recomputed exactly, and no loose tolerance is used instead"
            )
        inference = M.predict(model, batch.x)
        state = S.snapshot(model)
        first = M.to_numpy(model(batch.x, training=True))
        second = M.to_numpy(model(batch.x, training=True))
        S.restore_weights(model, state)
        if not _allclose(first, second):
            return "the training forward pass is not deterministic: it cannot be recomputed exactly"
        return "same" if _allclose(first, inference) else "separate"

    def _note_output_mask(self, batch):
        """Records whether a mask reaches the output (tells mask-lost from loss-ignores-mask)."""
        judge = self.judge
        judge.output_has_mask, judge.mask_dropper = False, None
        if not self.mask_sources:
            return
        carries = masks.output_carries_mask(self.model, batch.x)
        if carries is None:
            return
        judge.output_has_mask = carries
        if not carries:
            try:
                judge.mask_dropper = masks.first_mask_dropper(self.info, self.model, batch.x)
            except Exception:
                judge.mask_dropper = None

    def _check_padding_present(self, epoch: EpochSums):
        if epoch.real == epoch.positions and self.padding.pad_in != "mask":
            raise MaskLossInputError(
                f"no padding found: none of the {epoch.positions} positions in {epoch.batches} "
                f"batch(es) has {self.report.padding}. Nothing is padded, so there is nothing to check; "
                "pass pad_id=<your pad id>, pad_in='labels'|'inputs'|'sample_weight', or mask=..."
            )


def _refuse_non_finite(out, losses, m, p_out, batch_index):
    bad = ~np.isfinite(losses[m])
    if not np.any(bad):
        return
    if out.unwrapped and np.all(np.isfinite(p_out)):
        raise MaskLossInputError(
            f"output {out.name!r}: a {out.unwrapped} probability underflowed to 0 at a real "
            f"token of batch {batch_index}. Keras on TensorFlow computes this loss from the "
            f"logits under the {out.unwrapped}, which the predictions cannot give back; "
            "check a model with a linear output and a from_logits=True loss"
        )
    raise MaskLossInputError(
        f"output {out.name!r}: the model's predictions give a non-finite loss at "
        f"{int(np.sum(bad))} real token(s) of batch {batch_index}: NaN/inf in "
        "the model's output (or labels out of range) — the check cannot judge the reduction"
    )


def logs_of(result) -> dict:
    """What evaluate/test_on_batch/train_on_batch returned, as {name: float}."""
    if isinstance(result, dict):
        return {k: float(np.asarray(M.to_numpy(v)).reshape(-1)[0]) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return {"loss": float(result[0])}
    return {"loss": float(result)}


def _allclose(a, b):
    def flat(x):
        return x if isinstance(x, (list, tuple)) else list(x.values()) if isinstance(x, dict) else [x]

    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7) for x, y in zip(flat(a), flat(b)))
