"""``pytest --maskloss``: audit every Keras model a test suite trains or evaluates.

Imported (by ``plugin.pytest_configure``) only for a session that asked for auditing.

How it works:

- ``fit``, ``evaluate``, ``train_on_batch`` and ``test_on_batch`` of every Keras ``Model``
  class in ``sys.modules`` (Keras 3 ``keras.Model``, ``tf_keras.Model``, tf.keras 2.x
  ``keras.Model``) are replaced by wrappers at session start, again before each test (for
  Keras imported during collection), and by an import watcher the moment ``keras`` or
  ``tf_keras`` is first imported (for Keras imported inside a test). All are removed at
  session end: a class gets back exactly the ``__dict__`` entry it had (or none).
- A wrapper runs the original call first, unchanged, and returns its value untouched. Then,
  for a model with a mask source, zero sample weights or a configured pad id, it runs
  ``check_masked_loss`` on the same data, for the path that was called, once per model, path
  and test. For the training paths the check sees the weights from *before* the call: the
  wrapper snapshots them, lets the call run, saves the state the call left, puts the
  pre-call weights back, runs the check (which restores what it found) and finally puts the
  post-call state back — weights, optimizer variables, metric variables and ``history``.
- Calls made while a call is being audited or checked (the check's own ``evaluate``/``fit``,
  ``fit``'s validation ``evaluate``, the ``maskloss`` fixture's check) are passed through.
- Anything the audit cannot judge (one-shot generator, custom loss without a reference, no
  padding in the data, an internal error) is recorded as "not audited: reason"; it never
  changes the test's outcome.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import inspect
import json
import math
import os
import sys
import threading
import warnings

import pytest

from pytest_maskloss.errors import MaskLossInputError, MaskLossMismatch

METHODS = ("fit", "evaluate", "train_on_batch", "test_on_batch")
MAX_ATTEMPTS = 3  # calls tried per model, path and test when none could be audited (e.g. no padding yet)
KERAS_MODULES = ("keras", "tf_keras")


class _Depth(threading.local):
    value = 0


_DEPTH = _Depth()  # > 0 while a call is being made, audited or checked: nested calls pass through
_MISSING = object()


# --- records ---------------------------------------------------------------------------------


def _num(value):
    """JSON-safe float: non-finite values as strings."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _fmt(value):
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    return f"{value:.7g}"


def finding_rows(records):
    rows = []
    for record in records:
        for finding in record.get("findings", []):
            rows.append({"test": record["test"], "model": record["model"], "keras": record.get("keras"), **finding})
    return rows


# --- the plugin object registered for an auditing session --------------------------------------


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
        self.patches = {}  # (class, method) -> (had_own, original, wrapper)
        self.watcher = None
        self.is_worker = hasattr(config, "workerinput")

    # -- hooks --------------------------------------------------------------------------

    def pytest_report_header(self, config):
        return f"maskloss: auditing Keras models ({self.settings.mode} mode); {keras_label()}"

    def pytest_sessionstart(self, session):
        if self.config.pluginmanager.hasplugin("dsession"):
            return  # the xdist controller runs no test: only its workers audit
        self.install()
        self.watcher = _ImportWatcher(self.install)
        sys.meta_path.insert(0, self.watcher)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        from pytest_maskloss.plugin import marker_options

        self.install()
        options = self._options(marker_options(item))
        self.item, self.options = item, options
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
        self.uninstall()
        if self.is_worker:
            session.config.workeroutput["maskloss"] = json.dumps(self.records)
            return
        if self.settings.report_path:
            self.write_json(self.settings.report_path)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        data = getattr(node, "workeroutput", {}).get("maskloss")
        if data:
            self.records.extend(json.loads(data))

    def pytest_terminal_summary(self, terminalreporter):
        if self.is_worker:
            return
        lines = summary_lines(self.records, self.settings.mode)
        terminalreporter.section("maskloss audit")
        for line in lines:
            terminalreporter.write_line(line)

    def pytest_unconfigure(self, config):
        self.uninstall()  # in case the session ended before sessionfinish

    # -- options ------------------------------------------------------------------------

    def _options(self, marker):
        s = self.settings
        if marker.get("enabled") is False:
            return None
        options = {
            "pad_id": s.pad_id,
            "rtol": s.rtol,
            "atol": s.atol,
            "granularity": s.granularity,
            "pad_in": s.pad_in,
        }
        options.update({k: v for k, v in marker.items() if k != "enabled"})
        return options

    # -- patching ------------------------------------------------------------------------

    def install(self):
        for cls in keras_model_classes():
            for method in METHODS:
                if (cls, method) in self.patches:
                    continue
                had_own = method in cls.__dict__
                original = cls.__dict__[method] if had_own else None
                func = getattr(cls, method, None)
                if func is None:
                    continue
                wrapper = self._wrap(func, method)
                setattr(cls, method, wrapper)
                self.patches[(cls, method)] = (had_own, original, wrapper)
        self._guard_check()

    def _guard_check(self):
        """The check calls the model's own evaluate/fit: those calls must not be audited,
        also when the check runs from the ``maskloss`` fixture rather than from an audit."""
        if ("check", "run") in self.patches:
            return
        check = importlib.import_module("pytest_maskloss.check")  # numpy, no Keras
        cls = check._Check
        original = cls.__dict__["run"]

        @functools.wraps(original)
        def run(check_self):
            _DEPTH.value += 1
            try:
                return original(check_self)
            finally:
                _DEPTH.value -= 1

        cls.run = run
        self.patches[("check", "run")] = (True, original, run)

    def uninstall(self):
        if self.watcher is not None:
            try:
                sys.meta_path.remove(self.watcher)
            except ValueError:
                pass
            self.watcher = None
        for (cls, method), (had_own, original, wrapper) in list(self.patches.items()):
            if cls == "check":
                cls = sys.modules["pytest_maskloss.check"]._Check
            if cls.__dict__.get(method) is wrapper:
                if had_own:
                    setattr(cls, method, original)
                else:
                    delattr(cls, method)
            # else: a test replaced our wrapper for good; its replacement stays
        self.patches.clear()

    @contextlib.contextmanager
    def _raw_keras_methods(self):
        """While the check runs, the Keras classes carry Keras' own methods: neither our
        wrappers nor a test's monkeypatch of ``Model.fit`` (a spy would count the check's
        calls) see the check's calls. Whatever was there is put back afterwards."""
        saved = []
        for (cls, method), (had_own, original, wrapper) in self.patches.items():
            if not isinstance(cls, type):
                continue
            saved.append((cls, method, cls.__dict__.get(method, _MISSING)))
            if had_own:
                setattr(cls, method, original)
            elif method in cls.__dict__:
                delattr(cls, method)
        try:
            yield
        finally:
            for cls, method, value in saved:
                if value is _MISSING:
                    if method in cls.__dict__:
                        delattr(cls, method)
                else:
                    setattr(cls, method, value)

    def _wrap(self, func, method):
        plugin = self
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(model, *args, **kwargs):
            __tracebackhide__ = True  # a strict failure points at the test's own call
            if _DEPTH.value or plugin.options is None or plugin.item is None:
                return func(model, *args, **kwargs)
            _DEPTH.value += 1
            try:
                plan = plugin._plan(model, method, signature, args, kwargs)
                before = None
                if plan is not None and method in ("fit", "train_on_batch"):
                    try:
                        before = _state(model)
                    except Exception:  # cannot copy the state: leave this call alone
                        plan = None
                result = func(model, *args, **kwargs)
                message = None
                if plan is not None:
                    try:
                        message = plugin._audit(model, method, plan, before)
                    except Exception:  # _audit records its own errors; this is a last resort
                        message = None
            finally:
                _DEPTH.value -= 1
            if message is not None:
                raise MaskLossMismatch(message[0], report=message[1], findings=message[1].findings)
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
            from pytest_maskloss import _keras

            configured = self.options.get("pad_id") is not None
            if not configured and not _keras.mask_source_layers(model):
                bound = signature.bind(model, *args, **kwargs).arguments
                if not _has_zero_weights(bound):
                    return None
            else:
                bound = signature.bind(model, *args, **kwargs).arguments
            return bound
        except Exception:  # an unusual call: let Keras report it; never break the test here
            return None

    def _audit(self, model, method, bound, before):
        """Run the check for one call; returns (message, report) for strict mode, else None."""
        item = self.item
        record = {
            "test": item.nodeid,
            "model": str(getattr(model, "name", type(model).__name__)),
            "path": method,
            "keras": None,
            "status": "not-audited",
            "reason": "",
            "findings": [],
        }
        report = None
        after = None
        key = (item.nodeid, id(model), method)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        try:
            data = _check_data(method, bound)
            if isinstance(data, str):
                record["reason"] = data
            else:
                from pytest_maskloss import _keras
                from pytest_maskloss.check import check_masked_loss

                record["keras"] = _keras.keras_info(model).label
                options = dict(self.options)
                if options.get("pad_id") is None:
                    options["pad_id"] = 0
                if before is not None:
                    after = _state(model)
                    _apply(model, before)
                with warnings.catch_warnings(), self._raw_keras_methods():
                    warnings.simplefilter("ignore")
                    report = check_masked_loss(
                        model,
                        **data,
                        paths=(method,),
                        metrics=method in ("evaluate", "test_on_batch"),
                        **options,
                    )
                self.audited.add((item.nodeid, id(model), method))
                record["status"] = "finding" if report.findings else "ok"
                record["findings"] = [_finding(c) for c in report.findings]
                record["skipped"] = dict(report.skipped)
                if not report.comparisons and report.skipped:
                    record["status"] = "not-audited"
                    record["reason"] = "; ".join(report.skipped.values())
        except MaskLossInputError as exc:
            record["reason"] = str(exc).splitlines()[0]
        except Exception as exc:  # the audit must never break the user's test
            record["reason"] = f"audit error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            if after is not None:
                _apply(model, after)
        self.records.append(record)
        for finding in record["findings"]:
            item.user_properties.append(("maskloss", _property_text(record, finding)))
        if record["status"] == "not-audited":
            item.user_properties.append(("maskloss_not_audited", f"{record['model']} {method}: {record['reason']}"))
        if record["findings"] and self.settings.mode == "strict":
            from pytest_maskloss.report import mismatch_message

            message = (
                f"maskloss (--maskloss=strict): model {record['model']!r}, {method}() in this test:\n"
                + mismatch_message(report)
            )
            self.strict_failures[item.nodeid] = message
            return message, report
        return None

    # -- report ---------------------------------------------------------------------------

    def write_json(self, path):
        rows = finding_rows(self.records)
        data = {
            "mode": self.settings.mode,
            "keras": keras_label(),
            "totals": totals(self.records),
            "findings": rows,
            "not_audited": [
                {k: r[k] for k in ("test", "model", "path", "reason")}
                for r in self.records if r["status"] == "not-audited"
            ],
            "audits": self.records,
        }
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)


def _finding(c):
    return {
        "path": c.path,
        "quantity": c.quantity,
        "scope": c.scope,
        "mode": c.mode,
        "reported": _num(c.reported),
        "reference": _num(c.reference),
        "relative_error": _num(c.relative_error),
        "detail": c.detail,
    }


def _property_text(record, f):
    rel = f["relative_error"]
    rel = rel if isinstance(rel, str) else f"{rel:+.2%}"
    return (
        f"{record['model']} {f['path']} {f['quantity']} [{f['scope']}]: {f['mode']}; "
        f"reported {_fmt(f['reported'])}, reference {_fmt(f['reference'])}, relative error {rel}"
        + (f"; {f['detail']}" if f["detail"] else "")
    )


def totals(records):
    findings = finding_rows(records)
    modes = {}
    for row in findings:
        modes[row["mode"]] = modes.get(row["mode"], 0) + 1
    reasons = {}
    for r in records:
        if r["status"] == "not-audited":
            key = _reason_key(r["reason"])
            reasons[key] = reasons.get(key, 0) + 1
    audited = [r for r in records if r["status"] != "not-audited"]
    return {
        "audited_calls": len(audited),
        "audited_tests": len({r["test"] for r in audited}),
        "calls_with_findings": sum(1 for r in records if r["findings"]),
        "tests_with_findings": len({r["test"] for r in records if r["findings"]}),
        "findings": len(findings),
        "by_mode": modes,
        "not_audited": sum(reasons.values()),
        "not_audited_reasons": reasons,
    }


def summary_lines(records, mode):
    t = totals(records)
    rows = finding_rows(records)
    lines = []
    if rows:
        header = ("test", "model", "path", "failure mode", "reported", "reference", "rel. error")
        table = [header]
        for r in rows:
            path = r["path"] + ("" if r["quantity"] == "loss" else f" {r['quantity']}")
            if not r["scope"].startswith("epoch"):
                path += f" [{r['scope']}]"
            rel = r["relative_error"]
            table.append((
                r["test"], r["model"], path, r["mode"], _fmt(r["reported"]), _fmt(r["reference"]),
                rel if isinstance(rel, str) else f"{rel:+.2%}",
            ))
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for index, row in enumerate(table):
            lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    by_mode = ", ".join(f"{m}: {n}" for m, n in sorted(t["by_mode"].items()))
    lines.append(
        f"maskloss ({mode}): {t['audited_calls']} call(s) audited in {t['audited_tests']} test(s); "
        f"{t['findings']} finding(s) in {t['tests_with_findings']} test(s)"
        + (f" ({by_mode})" if by_mode else "")
        + f"; {t['not_audited']} call(s) not audited"
    )
    for reason, count in sorted(t["not_audited_reasons"].items(), key=lambda kv: -kv[1]):
        first = next(r for r in records if r["status"] == "not-audited" and _reason_key(r["reason"]) == reason)
        lines.append(f"  not audited ({count}x): {reason} — e.g. {first['test']} ({first['model']}.{first['path']})")
    return lines


def _reason_key(reason):
    """Reasons grouped for the summary: the text before the first ': ' (figures follow it)."""
    head = reason.split(": ")[0] if ": " in reason else reason
    if head == "audit error" and reason.count(": ") >= 2:
        head = ": ".join(reason.split(": ")[:2])
    return head if len(head) <= 100 else head[:97] + "..."


# --- what the check is given ------------------------------------------------------------------


def _is_one_shot(x):
    if x is None or not hasattr(x, "__next__"):
        return False
    names = {c.__name__ for c in type(x).__mro__}
    return not names & {"DatasetV2", "Dataset", "Sequence", "PyDataset"}


def _has_zero_weights(bound):
    sw = bound.get("sample_weight")
    if sw is not None:
        import numpy as np

        values = sw.values() if isinstance(sw, dict) else sw if isinstance(sw, (list, tuple)) else [sw]
        try:
            return any(bool(np.any(np.asarray(v) == 0)) for v in values)
        except Exception:
            return False
    x = bound.get("x")
    spec = getattr(x, "element_spec", None)  # a tf.data.Dataset of (x, y, sample_weight)
    return isinstance(spec, tuple) and len(spec) == 3


def _check_data(method, bound):
    """The check's data arguments for a call, or the reason the call cannot be audited."""
    x, y, sw = bound.get("x"), bound.get("y"), bound.get("sample_weight")
    if x is None:
        return "no x given (nothing to read the data from)"
    if _is_one_shot(x):
        return "one-shot generator: the data cannot be read a second time"
    if bound.get("class_weight"):
        return "class_weight is not modelled by the masked reference"
    data = {"x": x, "y": y, "sample_weight": sw}
    if method in ("train_on_batch", "test_on_batch"):
        data["batch_size"] = _leading_dim(x)
        return data
    data["batch_size"] = bound.get("batch_size")
    data["steps"] = bound.get("steps_per_epoch" if method == "fit" else "steps")
    split = bound.get("validation_split") or 0.0
    if method == "fit" and split:
        if y is None or not _is_array_like(x):
            return "validation_split with non-array data"
        n = _leading_dim(x)
        stop = int(math.floor(n * (1.0 - split)))  # what Keras trains on: the first part
        data.update(_slice(data, stop))
    return data


def _is_array_like(x):
    if isinstance(x, dict):
        return all(hasattr(v, "shape") for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(hasattr(v, "shape") for v in x)
    return hasattr(x, "shape")


def _leading_dim(x):
    if isinstance(x, dict):
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)):
        x = x[0]
    return int(x.shape[0])


def _slice(data, stop):
    def cut(v):
        if v is None:
            return None
        if isinstance(v, dict):
            return {k: cut(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(cut(u) for u in v)
        return v[:stop]

    return {k: cut(data[k]) for k in ("x", "y", "sample_weight")}


# --- model state ------------------------------------------------------------------------------


def _variables(model):
    variables = getattr(model, "variables", None)
    if variables is None:
        variables = model.weights
    return list(variables)


def _metric_variables(model):
    variables = getattr(model, "metrics_variables", None)
    if variables is not None:
        return list(variables)
    out = []
    for metric in getattr(model, "metrics", []) or []:
        out.extend(getattr(metric, "variables", []) or [])
    return out


def _state(model):
    """Everything a call can change, copied (no optimizer build, unlike the check's snapshot)."""
    import numpy as np

    from pytest_maskloss import _keras

    _keras.sync_jax_state(model)

    def copy(variables):
        return [(v, np.array(v.numpy())) for v in variables]

    return {
        "variables": copy(_variables(model)),
        "optimizer": copy(_keras.optimizer_variables(model)),
        "metrics": copy(_metric_variables(model)),
        "history": getattr(model, "history", None),
        "had_history": hasattr(model, "history"),
    }


def _apply(model, state):
    from pytest_maskloss import _keras

    _keras.sync_jax_state(model)
    for key in ("variables", "optimizer", "metrics"):
        for variable, value in state[key]:
            try:
                variable.assign(value)
            except Exception:
                pass
    if state["had_history"]:
        try:
            model.history = state["history"]
        except Exception:
            pass


# --- which classes, and the import watcher ------------------------------------------------------


def keras_model_classes():
    classes = []
    for name in KERAS_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        try:
            cls = getattr(module, "Model", None)
        except Exception:  # a module still being imported
            continue
        if isinstance(cls, type) and cls not in classes:
            classes.append(cls)
    return classes


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Patches as soon as ``keras`` or ``tf_keras`` is first imported (e.g. inside a test)."""

    def __init__(self, callback):
        self.callback = callback
        self.busy = False

    def find_spec(self, name, path=None, target=None):
        if name not in KERAS_MODULES or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        except Exception:
            return None
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, self.callback)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._callback()
        except Exception:
            pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


# --- the header ----------------------------------------------------------------------------------


def keras_label():
    """Keras version and backend for the report header, without importing Keras: from the
    imported module when a test (or conftest) already imported it, else from package
    metadata and the environment."""
    parts = []
    keras = sys.modules.get("keras")
    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")
    if keras is not None and hasattr(keras, "__version__"):
        version = keras.__version__
        if version.startswith("3") and hasattr(keras, "config"):
            parts.append(f"Keras {version} ({keras.config.backend()} backend)")
        else:
            parts.append(f"tf.keras {version} (tensorflow backend)")
    else:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("keras")
            if version.startswith("3"):
                parts.append(f"Keras {version} ({_configured_backend()} backend; not imported yet)")
            else:
                parts.append(f"tf.keras {version} (tensorflow backend; not imported yet)")
        except Exception:
            pass
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None or legacy:
        try:
            from importlib.metadata import version as dist_version

            version = getattr(tf_keras, "__version__", None) or dist_version("tf-keras")
            parts.append(f"tf_keras {version} (tensorflow backend" + (", TF_USE_LEGACY_KERAS=1)" if legacy else ")"))
        except Exception:
            pass
    return "; ".join(parts) or "Keras not installed"


def _configured_backend():
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            return json.load(handle).get("backend", "tensorflow")
    except Exception:
        return "tensorflow"
