"""Wrapping ``fit``/``evaluate``/``train_on_batch``/``test_on_batch`` of every Keras ``Model``
class for the length of a session, and giving every class back exactly what it had.

Classes are found in ``sys.modules`` (Keras 3 ``keras.Model``, ``tf_keras.Model``, tf.keras
2.x ``keras.Model``) when patches are installed, and by an import watcher the moment ``keras``
or ``tf_keras`` is first imported (e.g. inside a test).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys

from pytest_maskloss.compat import flavours as F

METHODS = ("fit", "evaluate", "train_on_batch", "test_on_batch")
KERAS_MODULES = tuple(sorted(set(F.MODEL_PACKAGES.values())))
_MISSING = object()


def keras_model_classes() -> list:
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


class Patches:
    """The wrappers installed on Keras classes; ``wrap(function, method)`` makes one."""

    def __init__(self, wrap):
        self.wrap = wrap
        self.installed = {}  # (class, method) -> (had_own, original, wrapper)
        self.watcher = None

    def install(self) -> None:
        for cls in keras_model_classes():
            for method in METHODS:
                if (cls, method) in self.installed:
                    continue
                func = getattr(cls, method, None)
                if func is None:
                    continue
                had_own = method in cls.__dict__
                original = cls.__dict__[method] if had_own else None
                wrapper = self.wrap(func, method)
                setattr(cls, method, wrapper)
                self.installed[(cls, method)] = (had_own, original, wrapper)

    def watch_imports(self) -> None:
        self.watcher = _ImportWatcher(self.install)
        sys.meta_path.insert(0, self.watcher)

    def uninstall(self) -> None:
        if self.watcher is not None:
            try:
                sys.meta_path.remove(self.watcher)
            except ValueError:
                pass
            self.watcher = None
        for (cls, method), (had_own, original, wrapper) in list(self.installed.items()):
            if cls.__dict__.get(method) is wrapper:
                if had_own:
                    setattr(cls, method, original)
                else:
                    delattr(cls, method)
            # else: a test replaced our wrapper for good; its replacement stays
        self.installed.clear()

    @contextlib.contextmanager
    def keras_own_methods(self):
        """While the check runs, the Keras classes carry Keras' own methods: neither our
        wrappers nor a test's monkeypatch of ``Model.fit`` (a spy would count the check's
        calls) see the check's calls. Whatever was there is put back afterwards."""
        saved = []
        for (cls, method), (had_own, original, _) in self.installed.items():
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


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Calls back as soon as ``keras`` or ``tf_keras`` is first imported."""

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
