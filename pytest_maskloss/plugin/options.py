"""The audit's settings: ``--maskloss`` and the ini options, and the ``maskloss`` marker of a
test, validated (bad values are a pytest usage error naming where they came from).

Light: imported by the plugin's hook module in every pytest run.
"""

from __future__ import annotations

import pytest

from pytest_maskloss.check.choices import GRANULARITIES, PAD_IN

MODES = ("warn", "strict")
MARKER_OPTIONS = ("pad_id", "rtol", "atol", "granularity", "pad_in", "enabled")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")

MARKER_HELP = (
    "maskloss(pad_id=0, rtol=None, atol=None, granularity='batch', pad_in='auto', enabled=True): "
    "options of the --maskloss audit for this test (enabled=False opts the test out)"
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
