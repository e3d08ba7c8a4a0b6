"""``pytest --maskloss``: the hooks of an auditing session and the audit of one call.

Registered (by the plugin's ``pytest_configure``) only for a session that asked for auditing.

- The Keras ``Model`` methods are wrapped (``plugin.patching``) at session start, again before
  each test (for Keras imported during collection) and when ``keras``/``tf_keras`` is first
  imported; the wrappers are removed at session end.
- A wrapper runs the original call first, unchanged, and returns its value untouched. Then,
  for a model with a mask source, zero sample weights or a configured pad id, it runs
  ``check_masked_loss`` on the same data (``plugin.calls``), for the path that was called, once
  per model, path and test. For the training paths the check sees the weights from *before*
  the call: the state is copied before the call, the state the call left is copied after it,
  the pre-call state is put back for the check (which restores what it found), and finally
  the post-call state is put back (``compat.state``).
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
import warnings

import pytest

from pytest_maskloss.check import guard
from pytest_maskloss.compat import detect, masks, state as S
from pytest_maskloss.errors import MaskLossInputError, MaskLossMismatch
from pytest_maskloss.plugin import records as R
from pytest_maskloss.plugin.calls import check_data, has_zero_weights
from pytest_maskloss.plugin.options import marker_options
from pytest_maskloss.plugin.patching import Patches

MAX_ATTEMPTS = 3  # calls tried per model, path and test when none could be audited (e.g. no padding yet)
TRAINING = ("fit", "train_on_batch")


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
        self.audited = set()  # (nodeid, id(model), method) already audited
        self.attempts = {}  # (nodeid, id(model), method) -> calls tried (not-audited ones too)
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
                bound = plugin._plan(model, method, signature, args, kwargs)
                before = None
                if bound is not None and method in TRAINING:
                    try:
                        before = S.snapshot(model)
                    except Exception:  # cannot copy the state: leave this call alone
                        bound = None
                result = func(model, *args, **kwargs)
                failure = None
                if bound is not None:
                    try:
                        failure = plugin._audit(model, method, bound, before)
                    except Exception:  # _audit records its own errors; this is a last resort
                        failure = None
            finally:
                _DEPTH.value -= 1
            if failure is not None:
                message, report = failure
                raise MaskLossMismatch(message, report=report, findings=report.findings)
            return result

        wrapper.__maskloss_wrapper__ = True
        return wrapper

    # -- one call -------------------------------------------------------------------------

    def _plan(self, model, method, signature, args, kwargs):
        """Cheap: decide whether to audit this call; returns the bound arguments or None."""
        try:
            key = (self.item.nodeid, id(model), method)
            if key in self.audited or self.attempts.get(key, 0) >= MAX_ATTEMPTS:
                return None
            bound = signature.bind(model, *args, **kwargs).arguments
            configured = self.options.get("pad_id") is not None
            if configured or masks.mask_source_layers(model) or has_zero_weights(bound):
                return bound
            return None
        except Exception:  # an unusual call: let Keras report it; never break the test here
            return None

    def _audit(self, model, method, bound, before):
        """Run the check for one call; returns (message, report) in strict mode, else None."""
        item = self.item
        record = R.new_record(item.nodeid, str(getattr(model, "name", type(model).__name__)), method)
        report = after = None
        key = (item.nodeid, id(model), method)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        try:
            data = check_data(method, bound)
            if isinstance(data, str):
                record["reason"] = data
            else:
                from pytest_maskloss.check.api import check_masked_loss

                record["keras"] = detect.keras_info(model).label
                options = dict(self.options)
                if options.get("pad_id") is None:
                    options["pad_id"] = 0
                if before is not None:
                    after = S.snapshot(model)
                    S.restore(model, before, strict=False)
                with warnings.catch_warnings(), self.patches.keras_own_methods():
                    warnings.simplefilter("ignore")
                    report = check_masked_loss(model, **data, paths=(method,),
                                               metrics=method in ("evaluate", "test_on_batch"), **options)
                self.audited.add(key)
                record["status"] = "finding" if report.findings else "ok"
                record["findings"] = [R.finding_of(c) for c in report.findings]
                record["skipped"] = dict(report.skipped)
                if not report.comparisons and report.skipped:
                    record["status"] = "not-audited"
                    record["reason"] = "; ".join(report.skipped.values())
        except MaskLossInputError as exc:
            record["reason"] = str(exc).splitlines()[0]
        except Exception as exc:  # the audit must never break the user's test
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            record["reason"] = f"audit error: {type(exc).__name__}: {first_line}"
        finally:
            if after is not None:
                S.restore(model, after, strict=False)
        return self._record(item, record, report)

    def _record(self, item, record, report):
        self.records.append(record)
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
