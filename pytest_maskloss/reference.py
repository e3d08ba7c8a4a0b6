"""The numpy reference under its documented import path: ``pytest_maskloss.reference`` is
``pytest_maskloss.check.reference`` (per-token losses) with ``check.lossspec`` (loss specs)."""

from pytest_maskloss.check.reference import (
    FLAVOURS,
    LossSpec,
    activation_unwrapped_by_keras,
    detect_flavour,
    per_token_loss,
    resolve_loss_spec,
    supported_losses,
    valid_token_mask,
)

__all__ = [
    "FLAVOURS",
    "activation_unwrapped_by_keras",
    "LossSpec",
    "detect_flavour",
    "per_token_loss",
    "resolve_loss_spec",
    "supported_losses",
    "valid_token_mask",
]
