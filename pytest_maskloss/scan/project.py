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
    "site-packages", ".ipynb_checkpoints", ".maskloss_cache",
}
MAX_PROJECT_FILES = 20000
# a module can provide a model, a layer or a loss only if it mentions one of these
_PROVIDER = re.compile(r"keras|Embedding|Masking|Sequential|Model|Loss|mask|import")
# top-level packages never resolved to project files: Keras's (keras_core, Keras 3's preview
# package, included) are known as Keras even in a checkout of Keras itself
_NOT_PROJECT = frozenset(KERAS_PACKAGES) | {"keras_core", "numpy", "math", "torch", "jax", "os", "sys"}
# packages whose names the analysis knows as installed packages (pytest_maskloss.keras losses):
# resolved to project files only for a class's bases, in a project that holds the package
_INSTALLED = frozenset({"pytest_maskloss"})
_USER = re.compile(r"(?<!\bre)\.compile\s*\(|\.fit\s*\(|\.evaluate\s*\(|\bexp\s*\(")
# every match of _USER starts where one of these is written
_USER_STARTS = (".compile", ".fit", ".evaluate", "exp")
# `from a.b import (c, d)` / `import a.b as e`, over backslash-continued lines
_IMPORT_STMT = re.compile(
    r"^[ \t]*(?:from[ \t]+([.\w]+)[ \t]+import[ \t]*(\([^)]*\)|[^\n#;]*(?:\\\n[^\n#;]*)*)"
    r"|import[ \t]+([^\n#;]*(?:\\\n[^\n#;]*)*))",
    re.M,
)
_WORD = re.compile(r"\w+")


def import_summary(text: str) -> tuple[frozenset, bool]:
    """(every word in the file's import statements, does it compile/fit/evaluate or call exp):
    what the reverse-import index keeps of a file.

    The same answers as ``_IMPORT_STMT.finditer`` / ``_USER.search`` over the whole text, but
    the patterns are only tried where they can match: an import statement starts at the start
    of a line that contains ``import``, and a match of ``_USER`` at one of ``_USER_STARTS``
    (a regular expression anchored at every line start is slow on big files)."""
    if "import" not in text:
        return frozenset(), False
    words = set()
    for m in import_statements(text):
        for group in m.groups():
            if group:
                words.update(_WORD.findall(group))
    return frozenset(words), _uses_model(text)


def import_statements(text: str):
    """The matches of ``_IMPORT_STMT`` that ``finditer`` would give over ``text``, tried only at
    the starts of lines that contain ``import`` (groups: from-module, its names, plain import)."""
    end = 0  # matches do not overlap: a line inside the previous statement is not tried
    find, rfind = text.find, text.rfind
    at = find("import")
    while at >= 0:
        start = rfind("\n", 0, at) + 1
        if start >= end:
            m = _IMPORT_STMT.match(text, start)
            if m is not None:
                end = m.end()
                yield m
            else:
                end = start + 1
        at = find("import", max(at + 6, end))


def relative_module(module_name: str, path: str, level: int, base: str) -> str | None:
    """The absolute module ``from <level dots><base> import ...`` names in the module
    ``module_name`` (file ``path``); None when the dots climb above the top package."""
    parts = module_name.split(".")
    pkg = parts if os.path.basename(path).startswith("__init__.") else parts[:-1]
    if level - 1 > len(pkg):
        return None
    pkg = pkg[: len(pkg) - (level - 1)]
    return ".".join(p for p in pkg + ([base] if base else []) if p)


def _uses_model(text: str) -> bool:
    match, find = _USER.match, text.find
    for literal in _USER_STARTS:
        at = find(literal)
        while at >= 0:
            if match(text, at):
                return True
            at = find(literal, at + 1)
    return False


def _first_words(names: str) -> list[str]:
    """``a.b as c, (d, e)`` -> ["a.b", "d", "e"]: the names an import statement imports."""
    names = re.sub(r"#[^\n]*|[()\\]", " ", names)
    words = (part.split() for part in names.split(","))
    return [w[0] for w in words if w and w[0] != "*"]


class ProjectIndex:
    def __init__(self, root: str, target, loader):
        self.root = root
        self.target = target
        self._loader = loader  # path -> ModuleAnalysis | None (parsed, not yet run)
        self._analyses: dict[str, object] = {}
        self._files: list[str] | None = None
        self._texts: dict[str, str] = {}
        self._imported: dict[str, frozenset] = {}  # path -> imported_files(path)
        self._module_paths: dict[tuple[str, str], str | None] = {}
        self._depth = 0
        self._forced: set[str] = set()
        # reverse-import index: path -> import_summary(text); filled lazily, or from the cache
        self.imports: dict[str, tuple[frozenset, bool]] = {}
        self._recording: list[set] = []  # the files each analysis being run has asked for
        self.stored_imports: dict[str, list] = {}  # path -> [size, mtime_ns, words, user] (cache)
        self.imports_changed = False

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
        self._note((path,))
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
            self.start_recording()
            try:
                an.run()
            finally:
                self._depth -= 1
                an.__dict__["_deps"] = self.stop_recording()
        elif an is not None:
            self._note(an.__dict__.get("_deps", ()))
        return an

    # -- what an analysis read (the persistent cache checks these files) -----------------
    def start_recording(self) -> None:
        self._recording.append(set())

    def stop_recording(self) -> frozenset:
        deps = frozenset(self._recording.pop())
        self._note(deps)
        return deps

    def _note(self, paths) -> None:
        if self._recording:
            self._recording[-1].update(paths)

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
                    full = os.path.abspath(os.path.join(dirpath, f))
                    if f.endswith(".py") and os.path.isfile(full):  # no FIFOs
                        out.append(full)
                if len(out) > MAX_PROJECT_FILES:
                    break
            self._files = sorted(out)
        return self._files

    def text(self, path: str) -> str:
        if path not in self._texts:
            try:
                with open(path, "rb") as fh:
                    self._texts[path] = fh.read(4 * 1024 * 1024).decode("utf-8", errors="replace")
            except OSError:
                self._texts[path] = ""
        return self._texts[path]

    def _summary(self, path: str) -> tuple[frozenset, bool]:
        """import_summary of a file, from the stored index when its size and mtime match."""
        try:
            st = os.stat(path)
            stat = [st.st_size, st.st_mtime_ns]
        except OSError:
            stat = None
        stored = self.stored_imports.get(path)
        if stat is not None and stored is not None and stored[:2] == stat:
            return frozenset(stored[2]), bool(stored[3])
        words, user = import_summary(self.text(path))
        if stat is not None:
            self.stored_imports[path] = [*stat, sorted(words), user]
            self.imports_changed = True
        return words, user

    def imported_files(self, path: str) -> frozenset[str]:
        """The project files ``path`` imports directly (``from a import b`` counts ``a`` and, when
        it is a package's module, ``a.b``), found from its text without parsing it; once per
        file and run (``importers`` asks again for each module a file might import)."""
        path = os.path.abspath(path)
        known = self._imported.get(path)
        if known is not None:
            return known
        out = set()
        module_name = self.module_name(path)
        for m in import_statements(self.text(path)):
            source, names, plain = m.groups()
            dotted = []
            if source is not None:
                level = len(source) - len(source.lstrip("."))
                base = relative_module(module_name, path, level, source[level:]) if level else source
                if base is None:
                    continue
                if base:
                    dotted.append(base)
                dotted.extend(f"{base}.{w}" if base else w for w in _first_words(names))
            else:
                dotted.extend(_first_words(plain))
            for name in dotted:
                if name and name.split(".")[0] not in _NOT_PROJECT:
                    found = self.find_module(name, path)
                    if found is not None and found != path:
                        out.add(found)
        known = self._imported[path] = frozenset(out)
        return known

    def shared_imports(self, paths: list[str], least: int = 2) -> list[str]:
        """The project files that at least ``least`` of ``paths`` import directly, the most
        imported first: what parallel workers would each parse again, so the parent process
        analyses them once before it forks (``Scanner.warm``)."""
        counts: dict[str, int] = {}
        for path in paths:
            for found in self.imported_files(path):
                counts[found] = counts.get(found, 0) + 1
        return sorted((f for f, n in counts.items() if n >= least), key=lambda f: (-counts[f], f))

    def importers(self, path: str) -> list[str]:
        """Project files that may import ``path`` and use what it defines: those that compile,
        fit, evaluate or call ``exp`` and name the module's last component in an import."""
        name = self.module_name(path)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "__init__" or not leaf:
            return []
        me = os.path.abspath(path)
        out = []
        for f in self.files():
            if f == me:
                continue
            summary = self.imports.get(f)
            if summary is None:
                summary = self.imports[f] = self._summary(f)
            words, user = summary
            # the words are a cheap first test; the import statements are then resolved, so that
            # ``from pkg import layers`` (the package pkg/layers/) is not taken for an import of
            # pkg/legacy/layers.py
            if user and leaf in words and me in self.imported_files(f):
                out.append(f)
        return out
