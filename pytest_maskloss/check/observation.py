"""One model under observation: what its reported figures must be compared with (each output's
reference, the padding rule, the judge, the report), the calls it observes (``watch``) and the
figures those calls returned, judged (``judge``). The fixture and the ``--maskloss`` audit both
use it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from pytest_maskloss.check.compare import Judge
from pytest_maskloss.check.metrics import Metrics
from pytest_maskloss.check.observe import Recorder
from pytest_maskloss.check.outputs import as_list, resolve_outputs
from pytest_maskloss.check.padding import Padding
from pytest_maskloss.check.report import Report
from pytest_maskloss.check.sums import EpochSums, Total
from pytest_maskloss.compat import flavours as F, masks, model as M
from pytest_maskloss.compat.pertoken import per_token_evaluator
from pytest_maskloss.compat.keptap import keep_tap, kept_tap
from pytest_maskloss.compat.tap import LossTap, TapUnavailable
from pytest_maskloss.compat.tokenstats import applies as statistics_apply, statistics_evaluator
from pytest_maskloss.compat.xlasteps import xla_compiled
from pytest_maskloss.errors import MaskLossInputError

ON_BATCH = ("test_on_batch", "train_on_batch")

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


KERAS_HUB_FIX = (
    "This KerasHub task's preprocessor passes the padding as sample_weight, and the task "
    "compiles SparseCategoricalCrossentropy with the default reduction, which divides by every "
    "position. Compile the task with a loss that divides by the real tokens: "
    "task.compile(optimizer, loss=pytest_maskloss.keras.MaskedSparseCategoricalCrossentropy("
    "from_logits=True)), or keras.losses.SparseCategoricalCrossentropy(from_logits=True, "
    "reduction=\"mean_with_sample_weight\") on Keras >= 3.7."
)


class Observation:
    def __init__(self, model, info, *, pad_id=0, pad_in="auto", mask=None, per_token_loss_fn=None,
                 granularity="batch", rtol=None, atol=None, metrics=True, data="the call's own data"):
        default_rtol, default_atol = TOLERANCES.get(M.compute_dtype(model), TOLERANCES["float32"])
        rtol = default_rtol if rtol is None else rtol
        atol = default_atol if atol is None else atol
        self.model = model
        self.info = info
        self.stack = info.stack
        self.outputs = resolve_outputs(model, self.stack, per_token_loss_fn)
        self.mask_sources = masks.mask_source_layers(model)
        self.padding = Padding(pad_in, pad_id, mask, self.mask_sources)
        self.replicas = M.num_replicas(model)
        self.want_metrics = metrics
        self.report = Report(
            keras=info.label,
            loss="; ".join(f"{o.name}: {o.loss_text}" if len(self.outputs) > 1 else o.loss_text for o in self.outputs),
            data=data,
            padding=self.padding.description,
            granularity=granularity,
            rtol=rtol,
            atol=atol,
        )
        if getattr(model, "preprocessor", None) is not None:  # a KerasHub task
            self.report.fix_for_this_model["padding-in-denominator"] = KERAS_HUB_FIX
        self.judge = Judge(self.report, rtol=rtol, atol=atol, granularity=granularity,
                           replicas=self.replicas, output_names=[o.name for o in self.outputs])
        self.judge.has_mask_source = bool(self.mask_sources)
        self.metrics = Metrics(self.outputs, self.stack, self.padding, self.judge)
        self.recorders = {}  # path -> Recorder of its last observed call
        self._tap = None  # the tap of the calls observed (an earlier observation's, if it fits)
        self._metric_names_known = False

    # -- observing a call ---------------------------------------------------------------------

    @contextmanager
    def watch(self, path):
        """Observe the model's calls made inside the block as ``path``; yields the Recorder, or
        None when the step cannot be observed (the reason is under ``report.skipped``)."""
        recorder = Recorder(self.outputs, self.padding, self.stack, self.metrics, self.judge,
                            replicas=self.replicas, path=path)
        if self.want_metrics and not self.metrics.names:
            self.metrics.names = self._metric_names()
        try:
            if self._tap is None:  # one tap for all the calls observed: each step traced once
                self._tap = self._kept_or_new_tap(recorder)
        except TapUnavailable as exc:
            self.report.skipped[path] = str(exc)
            yield None
            return
        tap = self._tap.open(recorder.on_step, recorder.new_period)
        if path in ON_BATCH:
            recorder.judge_steps = False  # the call's returned figure is judged instead
            if F.on_batch_returns_running_mean(self.info.flavour, self.info.version_tuple) is not False:
                recorder.follow_tracker(M.loss_tracker_state(self.model))
        with tap:
            yield recorder
        recorder.errors.extend(tap.errors)
        self.recorders[path] = recorder

    def _kept_or_new_tap(self, recorder):
        """The tap an earlier observation kept on the model when it was built for the same
        losses and payload (its traced steps are reused: no retrace per check), else a new one,
        kept on the model in its turn."""
        want_x, want_pred = self._wants_x(), self._wants_predictions()
        key = (tuple((o.name, id(o.loss), id(o.fn)) for o in self.outputs), want_x, want_pred,
               self.want_metrics, tuple(self.metrics.names or ()))
        tap = kept_tap(self.model, key)
        if tap is None:
            tap = LossTap(self.model, self.info, recorder.on_step, per_token=self._in_step_per_token(),
                          want_x=want_x, want_pred=want_pred, statistics=self._in_step_statistics())
            tap.key = key
            keep_tap(self.model, tap)
        return tap

    def _metric_names(self) -> list:
        """What Keras will log for the compiled metrics (prefixed by output with several)."""
        names = M.compiled_metric_names(self.model)
        if len(self.outputs) == 1:
            return names
        return [f"{o.name}_{n}" for o in self.outputs for n in names] + names

    def _in_step_per_token(self):
        custom = [o for o in self.outputs if o.custom]
        if not custom:
            return None
        evaluators = {o.name: per_token_evaluator(o.loss, self.info) for o in custom}
        names = [o.name for o in self.outputs]
        single = len(self.outputs) == 1

        def per_token(y, y_pred):
            ys, ps = as_list(y, names), as_list(y_pred, names)
            values = [evaluators[n](ys[i], ps[i]) if n in evaluators else None for i, n in enumerate(names)]
            return values[0] if single else values

        return per_token

    def _in_step_statistics(self):
        """Per-token statistics instead of the predictions (``compat.tokenstats``) when every
        output has a stock sparse cross-entropy, the outputs are float32 (mixed precision casts
        them, and Keras' loss then sees other tensors) and no compared metric needs the
        predictions; None otherwise (the predictions are sent)."""
        if not self.outputs or any(o.fn is not None or not statistics_apply(o.spec) for o in self.outputs):
            return None
        if len(self.outputs) != len(M.output_names(self.model)) or M.compute_dtype(self.model) != "float32":
            return None
        if self.want_metrics and self.metrics.need_predictions():
            return None
        # compiled metrics (compared or not) or the model's own step may read the predictions
        read = bool(M.compiled_metric_names(self.model)) or M.own_step(self.model)
        return statistics_evaluator([o.spec.from_logits for o in self.outputs], self.info,
                                    predictions_read=read, xla=xla_compiled(self.model, self.info))

    def _wants_x(self) -> bool:
        return self.padding.pad_in not in ("labels", "sample_weight") or bool(self.mask_sources)

    def _wants_predictions(self) -> bool:
        return any(not o.custom for o in self.outputs) or self.want_metrics

    # -- judging what the call returned -----------------------------------------------------

    def judge_call(self, path, result):
        """Compare the figures the call returned with its observed steps."""
        recorder = self.recorders.get(path)
        if recorder is None:
            return
        periods = recorder.finish()
        if recorder.observed:
            self.report.observed[path] = ", ".join(sorted(recorder.observed))
        if recorder.input_error is not None:
            raise recorder.input_error
        if recorder.errors:
            self.report.notes.append(f"{path}: observing the steps failed: {recorder.errors[0]}")
        if not periods and recorder.errors:  # the steps ran, but what they sent could not be read
            self.report.skipped[path] = f"observing the steps failed: {recorder.errors[0]}"
            return
        if not periods:
            self.report.skipped[path] = (
                "no step called compute_loss: a custom train_step/test_step that computes the "
                "loss itself cannot be observed"
            )
            return
        self.judge.output_has_mask = any(p.masked_output for p in periods)
        self._totals(periods if path in ON_BATCH else periods[:1])
        if path == "fit":
            self._judge_fit(result, periods)
        elif path == "evaluate":
            self._judge_epoch(path, logs_of(result), periods[0], "")
        else:
            self._judge_on_batch(path, result, recorder)
        self._name_the_dropper(recorder)

    def _totals(self, periods):
        if self.report.batches:
            return
        merged = {}
        for period in periods:
            for name, sums in period.outputs.items():
                merged.setdefault(name, EpochSums()).merge(sums)
        epoch = Total([(o.weight, merged[o.name]) for o in self.outputs if o.name in merged])
        report = self.report
        report.padding = self.padding.description
        report.batches, report.sequences = epoch.batches, epoch.sequences
        report.real_tokens, report.total_tokens = epoch.real, epoch.positions
        report.token_mean = epoch.token_mean() + epoch.added()
        report.sequence_weighted_mean = epoch.seq_weighted("reference") + epoch.added()
        if epoch.real == epoch.positions and self.padding.pad_in != "mask":
            raise MaskLossInputError(
                f"no padding found: none of the {epoch.positions} positions in {epoch.batches} "
                f"batch(es) has {report.padding}. Nothing is padded, so there is nothing to check; "
                "pass pad_id=<your pad id>, pad_in='labels'|'inputs'|'sample_weight', or mask=..."
            )

    def _epoch(self, period):
        return Total([(o.weight, period.outputs[o.name]) for o in self.outputs if o.name in period.outputs])

    def _judge_epoch(self, path, logs, period, prefix, scope=None):
        epoch = self._epoch(period)
        loss_key = f"{prefix}loss"
        granularity = self.judge.loss_granularity(logs)
        self.judge.epoch(path, logs.get(loss_key), loss_key, epoch, epoch.added(), granularity=granularity, scope=scope)
        if len(self.outputs) > 1:
            for out in self.outputs:
                key = f"{prefix}{out.name}_loss"
                if key in logs and out.name in period.outputs:
                    self.judge.epoch(path, logs[key], key, period.outputs[out.name], 0.0, scope=scope)
        if self.want_metrics:
            self.metrics.compare_epoch(path, logs, epoch.batches, sums=period.metrics, prefix=prefix, scope=scope)

    def _judge_fit(self, result, periods):
        history = getattr(result, "history", None) or {}
        train = [p for p in periods if p.phase == "train"]
        validation = [p for p in periods if p.phase == "test"]
        epochs = len(history.get("loss", []))
        for e, period in enumerate(train[-epochs:] if epochs else []):
            logs = {k: v[e] for k, v in history.items() if not k.startswith("val_") and len(v) > e}
            scope = f"epoch {e + 1}, {period.steps} batches" if epochs > 1 else None
            self._judge_epoch("fit", logs, period, "", scope)
        val_epochs = len(history.get("val_loss", []))
        for e, period in enumerate(validation[-val_epochs:] if val_epochs else []):
            logs = {k: v[e] for k, v in history.items() if k.startswith("val_") and len(v) > e}
            scope = f"epoch {e + 1} validation, {period.steps} batches"
            self._judge_epoch("fit", logs, period, "val_", scope)

    def _judge_on_batch(self, path, results, recorder):
        """``results``: what each observed call returned, in order."""
        for index, (result, (total, added, own, running)) in enumerate(zip(results, recorder.step_totals)):
            logs = logs_of(result)
            self.judge.batch(path, logs, total, f"batch {index}", added, own=own, running=running)

    def _name_the_dropper(self, recorder):
        judge = self.judge
        lost = [c for c in self.report.comparisons if c.mode == "mask-lost" and not judge.mask_dropper]
        if not lost or not self.mask_sources or recorder.first_batch is None:
            return
        try:
            with warnings.catch_warnings():  # the probe's sub-models make Keras warn about inputs
                warnings.simplefilter("ignore")
                judge.mask_dropper = masks.first_mask_dropper(self.info, self.model, recorder.first_batch.x)
        except Exception:
            return
        if judge.mask_dropper:
            for c in lost:
                c.detail = str(judge.mask_dropper)  # names the layer and how it loses the mask


def logs_of(result) -> dict:
    """What evaluate/test_on_batch/train_on_batch returned, as {name: float}."""
    import numpy as np

    if isinstance(result, dict):
        return {k: float(np.asarray(M.to_numpy(v)).reshape(-1)[0]) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return {"loss": float(result[0])}
    return {"loss": float(result)}
