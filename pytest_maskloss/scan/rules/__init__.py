"""The rule registry: ``RULES`` (the rules the engine runs, in code order), ``ALL_RULES``
(with ``MSK900``, which the engine gives to files it cannot read or parse) and ``CODES``
(code -> rule). One rule per module beside this one; shared pieces in ``base``."""

from __future__ import annotations

from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule
from pytest_maskloss.scan.rules.msk001_stock_loss_on_masked_output import StockLossOnMaskedOutput
from pytest_maskloss.scan.rules.msk002_loss_subclass_overrides_call import LossSubclassOverridesCall
from pytest_maskloss.scan.rules.msk003_custom_loss_reduces_time_axis import CustomLossReducesTimeAxis
from pytest_maskloss.scan.rules.msk004_perplexity_from_reported_loss import PerplexityFromReportedLoss
from pytest_maskloss.scan.rules.msk005_padding_sample_weight_with_batch_mean import SampleWeightPaddingWithBatchMean
from pytest_maskloss.scan.rules.msk006_mask_dropped_by_layer import MaskDroppedByLayer
from pytest_maskloss.scan.rules.msk007_negative_padding_label_without_ignore_class import (
    NegativePaddingLabelWithoutIgnoreClass,
)
from pytest_maskloss.scan.rules.msk900_parse_error import ParseError

RULES: list[Rule] = [
    StockLossOnMaskedOutput(),
    LossSubclassOverridesCall(),
    CustomLossReducesTimeAxis(),
    PerplexityFromReportedLoss(),
    SampleWeightPaddingWithBatchMean(),
    MaskDroppedByLayer(),
    NegativePaddingLabelWithoutIgnoreClass(),
]
ALL_RULES = RULES + [ParseError()]
CODES = {r.code: r for r in ALL_RULES}

__all__ = ["ALL_RULES", "CODES", "RULES", "Invalid", "ParseError", "Raw", "Rule"]
