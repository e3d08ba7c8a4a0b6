"""The pytest plugin (``pytest11`` entry point ``maskloss``): its hooks only.

Loaded in every pytest run of an environment where pytest-maskloss is installed, so this
module stays tiny and light: no TensorFlow, Keras or numpy at import time (a test asserts it).

- the ``maskloss`` fixture: ``assert_masked_loss``, imported when a test asks for it;
- ``--maskloss[=warn|strict]`` / ``--no-maskloss`` / ini ``maskloss``: audit every Keras model
  the suite trains or evaluates. Only the option handling (``plugin.options``) runs in every
  session; the audit (``plugin.audit``) is imported and registered only when the session asked
  for it;
- the ``@pytest.mark.maskloss(...)`` marker, validated (cheaply) in every session.
"""

from __future__ import annotations

import pytest

from pytest_maskloss.plugin.options import MARKER_HELP, MODES, marker_options, settings_from_config


@pytest.fixture
def maskloss():
    """Return ``assert_masked_loss``: check a model's reported loss against the masked reference.

    ``maskloss(model, x, y, ...)`` runs the model's own reporting paths on the data and raises
    ``pytest_maskloss.MaskLossMismatch`` (an AssertionError) naming the failure mode when a
    reported figure is not the mean over real tokens; it returns the report otherwise.
    """
    from pytest_maskloss.check.api import assert_masked_loss

    return assert_masked_loss


# --- options -------------------------------------------------------------------------------


def pytest_addoption(parser):
    group = parser.getgroup("maskloss", "pytest-maskloss: audit the loss Keras models report")
    group.addoption(
        "--maskloss",
        dest="maskloss",
        nargs="?",
        const="warn",
        default=None,
        metavar="warn|strict",
        help="audit every fit/evaluate/train_on_batch/test_on_batch of a padded Keras model "
        "against the masked reference. warn (default): findings in the summary, outcomes "
        "unchanged; strict: the test that made the call fails with the diagnosis.",
    )
    group.addoption(
        "--no-maskloss",
        dest="maskloss",
        action="store_const",
        const="off",
        help="do not audit (overrides the maskloss ini option)",
    )
    group.addoption(
        "--maskloss-report",
        dest="maskloss_report",
        default=None,
        metavar="FILE.json",
        help="write the audit's findings (the summary table's data) to FILE.json",
    )
    parser.addini("maskloss", "audit Keras models: true/false/warn/strict (default false)", default="false")
    parser.addini(
        "maskloss_pad_id",
        "pad id of the project: models without a mask source are audited too (padding = this id "
        "in the labels). Default: unset (0 for models with a mask source)",
        default="",
    )
    parser.addini("maskloss_rtol", "relative tolerance of the audit (default: by compute dtype)", default="")
    parser.addini("maskloss_atol", "absolute tolerance of the audit (default: by compute dtype)", default="")
    parser.addini("maskloss_granularity", "batch (default) or token", default="batch")
    parser.addini("maskloss_pad_in", "auto (default), labels, inputs, sample_weight or an input name", default="auto")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """``--maskloss PATH``: argparse would take PATH as the option's value. Rewrite the
    argument list (the command line, ``addopts`` and ``PYTEST_ADDOPTS`` are all in it) so that
    a bare ``--maskloss`` followed by anything but a mode means ``--maskloss=warn``."""
    changed = False
    for index, arg in enumerate(list(args)):
        if arg != "--maskloss":
            continue
        following = args[index + 1] if index + 1 < len(args) else None
        if following is None or following.startswith("-") or following in MODES:
            continue
        args[index] = "--maskloss=warn"
        changed = True
    if changed:
        import copy

        early_config.known_args_namespace = parser.parse_known_args(
            args, namespace=copy.copy(early_config.option)
        )


# --- session wiring ----------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_HELP)
    settings = settings_from_config(config)
    if not settings.enabled:
        return
    from pytest_maskloss.plugin.audit import AuditPlugin  # the heavy part, only for auditing sessions

    config.pluginmanager.register(AuditPlugin(config, settings), AuditPlugin.NAME)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("maskloss") is not None:
            marker_options(item)
