"""``pytest --maskloss``: the hooks of an auditing session and the audit of one call.

Registered (by the plugin's ``pytest_configure``) only for a session that asked for auditing.

- The Keras ``Model`` methods are wrapped (``plugin.patching``) at session start, again before
  each test (for Keras imported during collection) and when ``keras``/``tf_keras`` is first
  imported; the wrappers are removed at session end.
- A wrapper makes the original call itself, with its own arguments, and returns its value
  untouched. For a model with a mask source, zero sample weights, a configured pad id or a
  preprocessor that pads, the call runs under observation (``check.observation``): each step's
  batch, predictions, weights and masks reach the host, and the figures the call returned (its
  ``History``, its ``evaluate`` result) are judged against them. Every such call of a test is
  audited: the observations of one model share one tap kept on the model (``compat.keptap``),
  so its step functions are traced once, until it is compiled again.
- Calls made while a call is being audited, and every call a check makes (``check.guard``: the
  ``maskloss`` fixture's check too), are passed through.
- Anything the audit cannot judge is recorded as "not audited: reason" (``plugin.records``); it
  never changes the test's outcome.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading

import pytest

from pytest_maskloss.check import guard
from pytest_maskloss.compat import detect, masks, model as M
from pytest_maskloss.errors import MaskLossInputError, MaskLossMismatch
from pytest_maskloss.plugin import records as R
from pytest_maskloss.plugin.calls import has_zero_weights, pads_in_its_preprocessor
from pytest_maskloss.plugin.options import marker_options
from pytest_maskloss.plugin.patching import Patches

MAX_ATTEMPTS = 3  # calls tried per model, path and test when none could be audited (e.g. no padding yet)
ON_BATCH = ("test_on_batch", "train_on_batch")


class _Depth(threading.local):
    value = 0


_DEPTH = _Depth()  # > 0 while a call is being made or audited: nested calls pass through


class AuditPlugin:
    NAME = "maskloss-audit"

    def __init__(self, config, settings):
        self.config = config
        self.settings = settings
        self.records = []  # dicts, JSON-able (they travel from xdist workers)
        self.item = None
        self.options = None  # the current test's audit options (None: not auditing now)
        self.calls = {}  # (nodeid, id(model), method) -> calls audited or tried
        self.unaudited = {}  # (nodeid, id(model), method) -> calls that could not be audited
        self.strict_failures = {}  # nodeid -> message raised in strict mode
        self.patches = Patches(self._wrap)
        self.is_worker = hasattr(config, "workerinput")

    # -- hooks --------------------------------------------------------------------------

    def pytest_report_header(self, config):
        return f"maskloss: auditing Keras models ({self.settings.mode} mode); {detect.header_label()}"

    def pytest_sessionstart(self, session):
        if self.config.pluginmanager.hasplugin("dsession"):
            return  # the xdist controller runs no test: only its workers audit
        self.patches.install()
        self.patches.watch_imports()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.patches.install()
        self.item, self.options = item, self._options(marker_options(item))
        try:
            yield
        finally:
            self.item, self.options = None, None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        message = self.strict_failures.get(item.nodeid)
        if message and call.when == "call" and report.passed:
            # strict mode raised MaskLossMismatch from the call, but the test caught it
            report.outcome = "failed"
            report.longrepr = "maskloss (strict): the test swallowed the MaskLossMismatch raised by its call:\n" + message

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        self.patches.uninstall()
        if self.is_worker:
            session.config.workeroutput["maskloss"] = json.dumps(self.records)
            return
        if self.settings.report_path:
            R.write_json(self.settings.report_path, self.records, self.settings.mode, detect.header_label())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        data = getattr(node, "workeroutput", {}).get("maskloss")
        if data:
            self.records.extend(json.loads(data))

    def pytest_terminal_summary(self, terminalreporter):
        if self.is_worker:
            return
        terminalreporter.section("maskloss audit")
        for line in R.summary_lines(self.records, self.settings.mode):
            terminalreporter.write_line(line)

    def pytest_unconfigure(self, config):
        self.patches.uninstall()  # in case the session ended before sessionfinish

    # -- options ------------------------------------------------------------------------

    def _options(self, marker):
        if marker.get("enabled") is False:
            return None
        s = self.settings
        options = {"pad_id": s.pad_id, "rtol": s.rtol, "atol": s.atol,
                   "granularity": s.granularity, "pad_in": s.pad_in}
        options.update({k: v for k, v in marker.items() if k != "enabled"})
        return options

    # -- the wrapper ----------------------------------------------------------------------

    def _wrap(self, func, method):
        plugin = self
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(model, *args, **kwargs):
            __tracebackhide__ = True  # a strict failure points at the test's own call
            if _DEPTH.value or guard.active() or plugin.options is None or plugin.item is None:
                return func(model, *args, **kwargs)
            _DEPTH.value += 1
            try:
                audit = plugin._start(model, method, signature, args, kwargs)
                if audit is None:
                    return func(model, *args, **kwargs)
                with audit.observation.watch(method) as recorder:
                    result = func(model, *args, **kwargs)
                failure = plugin._finish(audit, recorder, result)
            finally:
                _DEPTH.value -= 1
            if failure is not None:
                message, report = failure
                raise MaskLossMismatch(message, report=report, findings=report.findings)
            return result

        wrapper.__maskloss_wrapper__ = True
        return wrapper

    # -- one call -------------------------------------------------------------------------

    def _start(self, model, method, signature, args, kwargs):
        """Cheap: decide whether to audit this call and set up its observation (None: leave the
        call alone)."""
        try:
            key = (self.item.nodeid, id(model), method)
            if self.unaudited.get(key, 0) >= MAX_ATTEMPTS:
                return None
            if not M.is_compiled(model):
                return None  # Keras itself refuses the call ("You must call compile()")
            bound = signature.bind(model, *args, **kwargs).arguments
            configured = self.options.get("pad_id") is not None
            if not (configured or masks.mask_source_layers(model) or has_zero_weights(bound)
                    or pads_in_its_preprocessor(model)):
                return None
        except Exception:  # an unusual call: let Keras report it; never break the test here
            return None
        self.calls[key] = self.calls.get(key, 0) + 1
        record = R.new_record(self.item.nodeid, str(getattr(model, "name", type(model).__name__)), method)
        record["call"] = self.calls[key]
        try:
            from pytest_maskloss.check.observation import Observation

            info = detect.keras_info(model)
            record["keras"] = info.label
            options = dict(self.options)
            if options.get("pad_id") is None:
                options["pad_id"] = 0
            observation = Observation(model, info, **options)
        except Exception as exc:
            record["reason"] = _reason(exc)
            self._record(self.item, record, None, key)
            return None
        return _Audit(key, record, observation)

    def _finish(self, audit, recorder, result):
        """Judge what the call returned; returns (message, report) in strict mode, else None."""
        record, observation = audit.record, audit.observation
        try:
            if recorder is not None:
                observation.judge_call(record["path"], [result] if record["path"] in ON_BATCH else result)
            report = observation.report
            record["status"] = "finding" if report.findings else "ok"
            record["findings"] = [R.finding_of(c) for c in R.headline(report.findings)]
            record["skipped"] = dict(report.skipped)
            if not report.comparisons:
                record["status"] = "not-audited"
                record["reason"] = "; ".join(report.skipped.values()) or "nothing was compared"
        except Exception as exc:  # the audit must never break the user's test
            record["reason"] = _reason(exc)
            return self._record(self.item, record, None, audit.key)
        return self._record(self.item, record, observation.report, audit.key)

    def _record(self, item, record, report, key):
        self.records.append(record)
        if record["status"] == "not-audited":
            self.unaudited[key] = self.unaudited.get(key, 0) + 1
        for finding in record["findings"]:
            item.user_properties.append(("maskloss", R.property_text(record, finding)))
        if record["status"] == "not-audited":
            item.user_properties.append(("maskloss_not_audited", f"{record['model']} {record['path']}: {record['reason']}"))
        if record["findings"] and self.settings.mode == "strict":
            from pytest_maskloss.check.report import mismatch_message

            message = (
                f"maskloss (--maskloss=strict): model {record['model']!r}, {record['path']}() in this test:\n"
                + mismatch_message(report)
            )
            self.strict_failures[item.nodeid] = message
            return message, report
        return None


class _Audit:
    __slots__ = ("key", "record", "observation")

    def __init__(self, key, record, observation):
        self.key, self.record, self.observation = key, record, observation


def _reason(exc) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, MaskLossInputError):
        return first
    return f"audit error: {type(exc).__name__}: {first}"
