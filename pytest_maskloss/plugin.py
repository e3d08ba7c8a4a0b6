"""The pytest plugin (``pytest11`` entry point ``maskloss``).

Loaded in every pytest run of an environment where pytest-maskloss is installed, so this
module must stay light: no TensorFlow, Keras or numpy at import time (a test asserts it).

- the ``maskloss`` fixture: ``assert_masked_loss``, imported when a test asks for it;
- ``--maskloss[=warn|strict]`` / ``--no-maskloss`` / ini ``maskloss``: audit every Keras model
  the suite trains or evaluates. Only this module's option handling runs in every session;
  the audit (``pytest_maskloss.audit``: wrappers, numpy, the check) is imported and registered
  only when the session asked for it;
- the ``@pytest.mark.maskloss(...)`` marker, validated here (cheaply) in every session.
"""

from __future__ import annotations

import pytest

MODES = ("warn", "strict")
GRANULARITIES = ("batch", "token")
PAD_IN = ("auto", "labels", "inputs", "sample_weight")
MARKER_OPTIONS = ("pad_id", "rtol", "atol", "granularity", "pad_in", "enabled")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")

_MARKER_HELP = (
    "maskloss(pad_id=0, rtol=None, atol=None, granularity='batch', pad_in='auto', enabled=True): "
    "options of the --maskloss audit for this test (enabled=False opts the test out)"
)


@pytest.fixture
def maskloss():
    """Return ``assert_masked_loss``: check a model's reported loss against the masked reference.

    ``maskloss(model, x, y, ...)`` runs the model's own reporting paths on the data and raises
    ``pytest_maskloss.MaskLossMismatch`` (an AssertionError) naming the failure mode when a
    reported figure is not the mean over real tokens; it returns the report otherwise.
    """
    from pytest_maskloss.check import assert_masked_loss

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


class Settings:
    """The session's audit settings, from the command line and ini (validated)."""

    def __init__(self, mode, pad_id, rtol, atol, granularity, pad_in, report_path):
        self.mode = mode  # "off", "warn" or "strict"
        self.pad_id = pad_id  # None: not configured for the project
        self.rtol = rtol
        self.atol = atol
        self.granularity = granularity
        self.pad_in = pad_in
        self.report_path = report_path

    @property
    def enabled(self):
        return self.mode != "off"

    def __repr__(self):
        return f"Settings({self.__dict__!r})"


def settings_from_config(config) -> Settings:
    mode = config.getoption("maskloss")
    if mode is not None and mode not in MODES + ("off",):
        raise pytest.UsageError(f"--maskloss={mode}: use --maskloss, --maskloss=warn or --maskloss=strict")
    if mode is None:
        raw = str(config.getini("maskloss")).strip().lower()
        if raw in _TRUE:
            mode = "warn"
        elif raw in _FALSE:
            mode = "off"
        elif raw in MODES:
            mode = raw
        else:
            raise pytest.UsageError(
                f"ini option maskloss = {raw!r}: use true, false, warn or strict"
            )
    pad_id = _ini_number(config, "maskloss_pad_id", allow_float=True)
    rtol = _ini_number(config, "maskloss_rtol", allow_float=True, non_negative=True)
    atol = _ini_number(config, "maskloss_atol", allow_float=True, non_negative=True)
    granularity = str(config.getini("maskloss_granularity")).strip() or "batch"
    if granularity not in GRANULARITIES:
        raise pytest.UsageError(f"ini option maskloss_granularity = {granularity!r}: use batch or token")
    pad_in = str(config.getini("maskloss_pad_in")).strip() or "auto"
    if not pad_in.isidentifier():
        raise pytest.UsageError(
            f"ini option maskloss_pad_in = {pad_in!r}: use auto, labels, inputs, sample_weight or an input name"
        )
    return Settings(mode, pad_id, rtol, atol, granularity, pad_in, config.getoption("maskloss_report"))


def _ini_number(config, name, *, allow_float, non_negative=False):
    raw = str(config.getini(name)).strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw) if allow_float else None
        except ValueError:
            value = None
    if value is None or (non_negative and value < 0):
        kind = "a non-negative number" if non_negative else "a number"
        raise pytest.UsageError(f"ini option {name} = {raw!r}: expected {kind}")
    return value


# --- the marker ------------------------------------------------------------------------------


def marker_options(item) -> dict:
    """The merged ``maskloss`` marker options of a test (closest marker wins), validated.

    Raises ``pytest.UsageError`` naming the test for an unknown option, a positional argument
    or a bad value.
    """
    merged = {}
    for mark in reversed(list(item.iter_markers("maskloss"))):  # farthest first
        if mark.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.maskloss takes keyword options only "
                f"({', '.join(MARKER_OPTIONS)}), got positional {mark.args!r}"
            )
        unknown = sorted(set(mark.kwargs) - set(MARKER_OPTIONS))
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.maskloss got unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(MARKER_OPTIONS)}"
            )
        for key, value in mark.kwargs.items():
            _validate_marker_value(item, key, value)
        merged.update(mark.kwargs)
    return merged


def _validate_marker_value(item, key, value):
    def bad(expected):
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.maskloss({key}={value!r}): expected {expected}"
        )

    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "enabled" and not isinstance(value, bool):
        bad("True or False")
    if key == "pad_id" and not is_number:
        bad("a number (the pad id in labels or inputs)")
    if key in ("rtol", "atol") and value is not None and not (is_number and value >= 0):
        bad("a non-negative number or None")
    if key == "granularity" and value not in GRANULARITIES:
        bad("'batch' or 'token'")
    if key == "pad_in" and not (isinstance(value, str) and value.isidentifier()):
        bad(f"one of {', '.join(PAD_IN)} or an input name")


# --- session wiring ----------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", _MARKER_HELP)
    settings = settings_from_config(config)
    if not settings.enabled:
        return
    from pytest_maskloss.audit import AuditPlugin  # the heavy part, only for auditing sessions

    config.pluginmanager.register(AuditPlugin(config, settings), AuditPlugin.NAME)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("maskloss") is not None:
            marker_options(item)
