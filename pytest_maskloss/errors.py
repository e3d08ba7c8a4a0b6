"""The exceptions a check raises; importable without numpy or Keras."""

FAILURE_MODES = (
    "padding-in-denominator",
    "mask-lost",
    "loss-ignores-mask",
    "epoch-weighted-by-sequences",
    "replicas-weighted-equally",
    "empty-batch",
    "metric-counts-padding",
    "unexplained",
)


class MaskLossError(Exception):
    """Base class of everything pytest-maskloss raises."""


class MaskLossInputError(MaskLossError, ValueError):
    """The check cannot run on what it was given (uncompiled model, no padding, ...).

    The message says what was wrong and what to pass instead.
    """


class MaskLossMismatch(MaskLossError, AssertionError):
    """A reported loss or metric is not the masked reference.

    ``mode`` is the diagnosed failure mode (one of ``FAILURE_MODES``) of the first finding,
    ``findings`` all findings, ``report`` the full report with every figure compared.
    """

    def __init__(self, message, report=None, findings=()):
        super().__init__(message)
        self.report = report
        self.findings = list(findings)
        self.mode = self.findings[0].mode if self.findings else "unexplained"
