"""One fixture check: the model's own reporting paths (``evaluate``, ``test_on_batch``,
``train_on_batch``, ``fit``) run on the data under observation, each judged on what it returned;
the caller's model left as it was found."""

from __future__ import annotations

import re
import time

from pytest_maskloss.check.data import DataSource, batch_tuple
from pytest_maskloss.check.observation import ON_BATCH, Observation
from pytest_maskloss.check.report import Report
from pytest_maskloss.compat import state as S
from pytest_maskloss.errors import MaskLossInputError

PATH_ORDER = ("evaluate", "test_on_batch", "train_on_batch", "fit")


class CheckRun:
    def __init__(self, model, info, data: DataSource, *, paths, **options):
        self.model = model
        self.data = data
        self.paths = [p for p in PATH_ORDER if p in paths]
        self.observation = Observation(model, info, data=data.describe(), **options)

    @property
    def report(self) -> Report:
        return self.observation.report

    def run(self) -> Report:
        S.build_optimizer(self.model)
        state = S.snapshot(self.model)
        try:
            for path in self.paths:
                self._call(path)
        finally:
            S.restore(self.model, state)
        return self.report

    def _call(self, path):
        observation = self.observation
        start = time.perf_counter()
        with observation.watch(path) as recorder:
            if recorder is None:
                return
            try:
                result = self._run_path(path)
            except MaskLossInputError:
                raise
            except Exception as exc:
                raise MaskLossInputError(failure_sentence(path, exc)) from None
        timings = self.report.timings
        timings[path] = timings.get(path, 0.0) + time.perf_counter() - start
        timings["reference"] = timings.get("reference", 0.0) + recorder.seconds
        observation.judge_call(path, result)

    def _run_path(self, path):
        model = self.model
        if path in ON_BATCH:
            method = getattr(model, path)
            return [method(*batch_tuple(b), return_dict=True) for b in self.data.batches()]
        if path == "evaluate":
            return model.evaluate(**self.data.keras_kwargs(), verbose=0, return_dict=True)
        kwargs = self.data.keras_kwargs()
        steps = kwargs.pop("steps", None)
        if steps is not None:
            kwargs["steps_per_epoch"] = steps
        return model.fit(**kwargs, shuffle=False, epochs=1, verbose=0)


def failure_sentence(path, exc) -> str:
    """What to tell the user when the model's own call failed on the data given to the check."""
    # TensorFlow puts the traced code first, then the message, then the op names in [[...]];
    # Keras' "Exception encountered when calling" ends with the arguments it received
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras colours the message
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    message = [l for l in lines if not l.startswith(("[[", "File ", "•", "Arguments received by"))]
    last = (message or lines or [""])[-1]
    tensorflow = "label value of" in last and "outside the valid range" in last
    torch = last.startswith("Target ") and "out of bounds" in last
    if tensorflow or torch:
        return (
            f"the model's own {path}() failed on this data: {last.split('Label values')[0].strip()} "
            f"{'TensorFlow' if tensorflow else 'PyTorch'} rejects sparse labels outside the "
            "vocabulary, such as -1 padding (Keras on JAX scores negative labels 0 instead, and "
            "counts them in the divisor; PyTorch does so for -100 only). "
            "Compile the loss with ignore_class=<that label> and pass pad_id=<that label> to the check"
        )
    return (
        f"the model's own {path}() failed on this data ({type(exc).__name__}: {last[:300]}); "
        "check the labels, sample weights and batch structure given to the check"
    )
