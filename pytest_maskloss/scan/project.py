"""Linking across the modules of one project.

A file is analysed together with the project modules it imports (resolved to files under the
project root, its ``src/`` folder or the importing file's folder), and, when it defines
something other modules use (a model builder, a layer, a loss), with the project modules that
import it: so a model built in ``models.py`` and compiled in ``train.py`` is found whichever of
the two files is scanned. Files are read once per run and parsed only when a cheap text test
says they can matter.
"""

from __future__ import annotations

import os
import re

from pytest_maskloss.compat.flavours import KERAS_PACKAGES

SKIP_DIRS = {
    ".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "env", ".env", "build", "dist",
    "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs",
    "site-packages", ".ipynb_checkpoints",
}
MAX_PROJECT_FILES = 20000
# a module can provide a model, a layer or a loss only if it mentions one of these
_PROVIDER = re.compile(r"keras|Embedding|Masking|Sequential|Model|Loss|mask|import")
# top-level packages never resolved to project files
_NOT_PROJECT = frozenset(KERAS_PACKAGES) | {"numpy", "math", "torch", "jax", "os", "sys"}
# packages whose names the analysis knows as installed packages (pytest_maskloss.keras losses):
# resolved to project files only for a class's bases, in a project that holds the package
_INSTALLED = frozenset({"pytest_maskloss"})
_USER = re.compile(r"(?<!\bre)\.compile\s*\(|\.fit\s*\(|\.evaluate\s*\(|\bexp\s*\(")


class ProjectIndex:
    def __init__(self, root: str, target, loader):
        self.root = root
        self.target = target
        self._loader = loader  # path -> ModuleAnalysis | None (parsed, not yet run)
        self._analyses: dict[str, object] = {}
        self._files: list[str] | None = None
        self._texts: dict[str, str] = {}
        self._module_paths: dict[tuple[str, str], str | None] = {}
        self._depth = 0
        self._forced: set[str] = set()

    # -- module names ------------------------------------------------------------------
    def module_name(self, path: str) -> str:
        path = os.path.abspath(path)
        for base in (os.path.join(self.root, "src"), self.root):
            try:
                rel = os.path.relpath(path, base)
            except ValueError:
                continue
            if not rel.startswith(".."):
                rel = os.path.splitext(rel)[0].replace(os.sep, ".")
                if rel.endswith(".__init__"):
                    rel = rel[: -len(".__init__")]
                return rel
        return os.path.splitext(os.path.basename(path))[0]

    def find_module(self, dotted: str, from_path: str) -> str | None:
        key = (dotted, os.path.dirname(from_path))
        if key in self._module_paths:
            return self._module_paths[key]
        result = None
        rel = dotted.replace(".", os.sep)
        for base in (os.path.dirname(os.path.abspath(from_path)), self.root, os.path.join(self.root, "src")):
            for candidate in (os.path.join(base, rel + ".py"), os.path.join(base, rel, "__init__.py")):
                if os.path.isfile(candidate):
                    result = os.path.abspath(candidate)
                    break
            if result:
                break
        self._module_paths[key] = result
        return result

    # -- analyses ----------------------------------------------------------------------
    MAX_DEPTH = 4  # how deep a chain of project imports is followed

    def analysis(self, path: str, force: bool = False):
        """``force``: parse the file even if the prefilter rules it out (an importer found by
        ``importers``, which may only call a helper of the imported module)."""
        path = os.path.abspath(path)
        if path in self._analyses and not (force and self._analyses[path] is None and path not in self._forced):
            an = self._analyses[path]
        else:
            if self._depth >= self.MAX_DEPTH:
                return None
            self._analyses[path] = None  # guard against import cycles
            if force:
                self._forced.add(path)
            an = self._loader(path, self, force)
            self._analyses[path] = an
        if an is not None and not an.done and not an.running:
            self._depth += 1
            try:
                an.run()
            finally:
                self._depth -= 1
        return an

    def put(self, path: str, an) -> None:
        self._analyses[os.path.abspath(path)] = an

    def resolve(self, qname: str, from_path: str, base_class: bool = False):
        """The value a dotted name imported from a project module has there (a ``ModuleRef``
        for a module), or None."""
        from pytest_maskloss.scan.values import ModuleRef, Qual

        parts = qname.split(".")
        if parts[0] in _NOT_PROJECT:
            return None
        if parts[0] in _INSTALLED and not (base_class and self.find_module(parts[0], os.path.join(self.root, "-"))):
            return None
        for i in range(len(parts), 0, -1):
            mod = ".".join(parts[:i])
            path = self.find_module(mod, from_path)
            if path is None:
                continue
            if os.path.abspath(path) == os.path.abspath(from_path):
                return None
            an = self.analysis(path)
            if an is None:
                return None
            rest = parts[i:]
            if not rest:
                return ModuleRef(an)
            value = an.globals.get(rest[0])
            if len(rest) > 1:
                # ``keras`` re-exported by a project module (``from .compat import keras``):
                # ``compat.keras.layers.Embedding`` is ``tensorflow.keras.layers.Embedding``
                return value.attr(".".join(rest[1:])) if isinstance(value, Qual) else None
            return value
        return None

    # -- reverse links -----------------------------------------------------------------
    def files(self) -> list[str]:
        if self._files is None:
            out = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = [
                    d for d in dirnames
                    if d not in SKIP_DIRS and not d.endswith(".egg-info")
                    and not os.path.isfile(os.path.join(dirpath, d, "pyvenv.cfg"))
                ]
                for f in filenames:
                    if f.endswith(".py") and os.path.isfile(os.path.join(dirpath, f)):  # no FIFOs
                        out.append(os.path.join(dirpath, f))
                if len(out) > MAX_PROJECT_FILES:
                    break
            self._files = out
        return self._files

    def text(self, path: str) -> str:
        if path not in self._texts:
            try:
                with open(path, "rb") as fh:
                    self._texts[path] = fh.read(4 * 1024 * 1024).decode("utf-8", errors="replace")
            except OSError:
                self._texts[path] = ""
        return self._texts[path]

    def importers(self, path: str) -> list[str]:
        """Project files that may import ``path`` and use what it defines."""
        name = self.module_name(path)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "__init__" or not leaf:
            return []
        word = re.compile(r"\b" + re.escape(leaf) + r"\b")
        me = os.path.abspath(path)
        out = []
        for f in self.files():
            if os.path.abspath(f) == me:
                continue
            text = self.text(f)
            if leaf in text and "import" in text and _USER.search(text) and word.search(text):
                out.append(os.path.abspath(f))
        return out
