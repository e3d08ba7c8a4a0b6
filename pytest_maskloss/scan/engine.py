"""Scanning one file: prefilter, parse, analyse (with project links), run the rules, apply noqa
and the configuration. Never raises for bad input."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from pytest_maskloss.scan import rules as R
from pytest_maskloss.scan._lazy import LazyModule
from pytest_maskloss.scan.config import Config, project_root
from pytest_maskloss.scan.findings import Finding, Fix
from pytest_maskloss.scan.parsing import safe_parse
from pytest_maskloss.scan.project import ProjectIndex
from pytest_maskloss.scan.source import MAX_BYTES, SourceError, read_units
from pytest_maskloss.scan.syntax import walk
from pytest_maskloss.scan.target import UNKNOWN, KerasTarget, keras_target, target_from_config_value

cst = LazyModule("libcst")
A = LazyModule("pytest_maskloss.scan.analysis")  # imports libcst
C = LazyModule("pytest_maskloss.scan.cache")
E = LazyModule("pytest_maskloss.scan.edits")
V = LazyModule("pytest_maskloss.scan.values")

PARSE_CODE = "MSK900"

# A file that contains none of these cannot produce a finding (nor provide a model, a layer or a
# loss to a file that does: those mention Embedding/Masking/compute_mask/... themselves). Plain
# substring tests on the raw bytes (memchr speed), then a regular expression only on the files
# that contain the substring; the tokens are ASCII, so any ASCII-compatible encoding works.
_TOKENS = (b"compute_mask", b"y_pred", b"mask_zero")
_HUB_TASKS = (b"CausalLM", b"MaskedLM", b"Seq2SeqLM")  # KerasHub tasks: MSK005 needs a fit/evaluate
_NOQA = re.compile(r"#\s*noqa(?::\s*([A-Za-z]+\d+(?:[\s,]+[A-Za-z]+\d+)*))?", re.I)
_FILE_NOQA = re.compile(r"^\s*#\s*maskloss:\s*noqa(?::\s*([A-Za-z]+\d+(?:[\s,]+[A-Za-z]+\d+)*))?\s*$", re.I | re.M)

# `supports_masking` read as an attribute, or set in a class body / by assignment; not the
# keyword argument of a call (`run_layer_test(..., supports_masking=True,)` in Keras's tests)
_SUPPORTS_MASKING = re.compile(rb"\.supports_masking\b|^[ \t]*supports_masking[ \t]*(?::[^=\n]*)?=(?!=)[^,)\n]*$", re.M)
# a call of a method named exactly `compile` (not `.compile_pattern(`), with its receiver
_COMPILE_CALL = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*)?[ \t]*\.compile[ \t]*\(")
# a call of `exp` (not its definition, not `np.expm1(`/`myexp(`)
_EXP_CALL = re.compile(rb"(?<![A-Za-z0-9_])(?<!def )exp[ \t]*\(")
_NOT_KERAS_COMPILE = {b"re", b"regex", b"re2", b"_re", b"torch", b"py_compile", b"sre_compile", b"jax", b"numba"}


def prefilter(data) -> bool:
    """Can this file (bytes or str) produce a finding? False means: do not parse it."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    for token in _TOKENS:
        if token in data:
            return True
    if b"supports_masking" in data and _SUPPORTS_MASKING.search(data):
        return True
    # Embedding/Masking only from Keras (a PyTorch nn.Embedding file is not parsed)
    if (b"Embedding" in data or b"Masking" in data) and (b"keras" in data or b"tensorflow" in data):
        return True
    if any(t in data for t in _HUB_TASKS) and (b".fit(" in data or b".evaluate(" in data or b"_on_batch(" in data):
        return True
    if b"__call__" in data and b"Loss" in data:
        return True
    if b"sample_weight" in data and (b"fit" in data or b"evaluate" in data):
        return True
    if b".compile" in data and (b"loss" in data or b"optim" in data or b"adam" in data or b"Adam" in data):
        for m in _COMPILE_CALL.finditer(data):
            if m.group(1) not in _NOT_KERAS_COMPILE:
                return True
    if b"exp" in data and b"loss" in data and (b"history" in data or b"evaluate" in data):
        if _EXP_CALL.search(data):
            return True
    return False


@dataclass
class Settings:
    config: Config = field(default_factory=Config)
    keras_version: str | None = None  # --keras-version override
    scan_set: frozenset = frozenset()  # absolute paths being scanned (skip reverse links to them)
    link: bool = True  # cross-module linking
    cwd: str = field(default_factory=os.getcwd)
    cache: bool = False  # the persistent cache (the CLI turns it on; --no-cache)
    cache_dir: str | None = None  # default: <project root>/.maskloss_cache


@dataclass
class FileResult:
    path: str
    findings: list
    parsed: bool = False
    skipped: bool = False  # prefilter said no
    cached: bool = False  # findings from the persistent cache (parsed in an earlier run)


class Scanner:
    """Per-process state: one ProjectIndex per project root (files read and parsed once)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.indexes: dict[str, ProjectIndex] = {}
        self.targets: dict[str, KerasTarget] = {}
        self._parse_errors: dict[str, list] = {}
        self._source_errors: dict[str, str] = {}
        self.caches: dict[str, C.Cache] = {}
        self._files_digest: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------
    def display(self, path: str) -> str:
        path = os.path.abspath(path)
        try:
            rel = os.path.relpath(path, self.settings.cwd)
        except ValueError:
            return path
        return path if rel.startswith("..") else rel

    def target_for(self, root: str) -> KerasTarget:
        if root not in self.targets:
            self.targets[root] = keras_target(root, self.settings.config, self.settings.keras_version)
        return self.targets[root]

    def index_for(self, path: str) -> ProjectIndex:
        root = project_root(path)
        if root not in self.indexes:
            self.indexes[root] = ProjectIndex(root, self.target_for(root), self._load)
        return self.indexes[root]

    def _load(self, path: str, index: ProjectIndex | None, force: bool = False):
        """Read and parse ``path`` into a ModuleAnalysis (not run). None when the file cannot
        matter (prefilter) or cannot be read."""
        if not os.path.isfile(path):
            return None
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            self._source_errors[path] = f"cannot read: {exc.strerror or exc}"
            return None
        if not force and not prefilter(data) and not (index is not None and _provides(data)):
            return None
        try:
            units = read_units(path, data)
        except SourceError as exc:
            self._source_errors[path] = str(exc)
            return None
        modules = []
        errors = []
        for i, unit in enumerate(units):
            module, error = safe_parse(unit.text)
            modules.append(module)
            if error is not None:
                errors.append((i, *error))
        self._parse_errors[path] = errors
        target = index.target if index is not None else self.target_for(project_root(path))
        an = A.ModuleAnalysis(
            path, units, modules, target, index if self.settings.link else None,
            module_name=index.module_name(path) if index is not None else None,
        )
        an.display_path = self.display(path)
        return an

    def warm(self, paths: list[str]) -> None:
        """Analyse, in this process, the project modules several of ``paths`` import: forked
        workers then inherit them instead of each parsing them again. Never raises."""
        if not self.settings.link:
            return
        try:
            by_root: dict[str, list] = {}
            for path in paths:
                by_root.setdefault(self.index_for(path).root, []).append(os.path.abspath(path))
            for root, group in by_root.items():
                index = self.indexes[root]
                for module in index.shared_imports(group):
                    index.analysis(module)
        except Exception:  # a bug here only costs speed: the workers analyse what is missing
            if os.environ.get("MASKLOSS_DEBUG"):
                raise

    # -- one file ----------------------------------------------------------------------
    def scan_file(self, path: str, quick: bool = False) -> FileResult | None:
        path = os.path.abspath(path)
        try:
            return self._scan_file(path, quick)
        except (RecursionError, MemoryError) as exc:
            return FileResult(path, [self._error_finding(path, 1, 1, None, f"file too complex to analyse ({type(exc).__name__})")], False)
        except Exception as exc:  # a bug in the scanner: reported, never a traceback
            if os.environ.get("MASKLOSS_DEBUG"):
                raise
            return FileResult(path, [self._error_finding(path, 1, 1, None, f"internal error while analysing ({type(exc).__name__}: {str(exc)[:100]}); please report it")], False)

    def quick_result(self, path: str) -> FileResult | None:
        """The result when it needs no analysis (unreadable, ruled out by the prefilter, or in
        the cache); None when the file must be analysed (``scan_file``)."""
        return self.scan_file(path, quick=True)

    def _scan_file(self, path: str, quick: bool = False) -> FileResult | None:
        if not os.path.isfile(path):
            return FileResult(path, [self._error_finding(path, 1, 1, None, "not a regular file")])
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            return FileResult(path, [self._error_finding(path, 1, 1, None, f"cannot read: {exc.strerror or exc}")])
        # Reading (decoding, notebook JSON) is cheap C-speed work and done for every file, so
        # unreadable files are reported even when the prefilter would skip them.
        try:
            read_units(path, data)
        except SourceError as exc:
            return FileResult(path, [self._error_finding(path, 1, 1, None, str(exc))])
        if not prefilter(data):
            return FileResult(path, [], skipped=True)
        cache = self.cache_for(path)
        if cache is not None:
            key = cache.key(path, data)
            hit = self._from_cache(cache, cache.read(key), path)
            if hit is not None:
                return hit
        if quick:
            return None
        result, entry = self._analyse(path)
        if cache is not None and entry is not None:
            cache.write(key, entry)
        return result

    def _analyse(self, path: str):
        """(FileResult, cache entry or None) of a file that passed the prefilter."""
        index = self.index_for(path) if self.settings.link else None
        if index is not None:
            an = index._analyses.get(path)
            if an is None:
                an = self._load(path, index, force=True)
                index.put(path, an)
            if an is not None and not an.done:
                index.start_recording()
                try:
                    an.run()
                finally:
                    an.__dict__["_deps"] = index.stop_recording()
        else:
            an = self._load(path, None, force=True)
            if an is not None:
                an.run()
        if an is None:
            msg = self._source_errors.get(path, "cannot read")
            return FileResult(path, [self._error_finding(path, 1, 1, None, msg)]), None
        findings = []
        errors = self._parse_errors.get(path, [])
        if errors and an.units[0].cell is not None:
            # a notebook: one warning for its invalid cells; the other cells are analysed
            unit, line, col, msg = errors[0]
            cells = len(an.units)
            what = "1 code cell is" if len(errors) == 1 else f"{len(errors)} of {cells} code cells are"
            f = self._error_finding(
                path, line, an.units[unit].column_in_original(line, col - 1) + 1, an.units[unit].cell,
                f"{what} not valid Python even as IPython runs it (not analysed; the other cells are): "
                f"first: {msg}", severity="warning",
            )
            errors = [(unit, f)] if self._keep(an, f, unit) else []
            findings.extend(f for _, f in errors)
        else:
            for unit, line, col, msg in errors:
                f = self._error_finding(path, line, col, an.units[unit].cell, msg)
                if self._keep(an, f, unit):
                    findings.append(f)
        # findings in the modules that import this one and use what it defines (kept for the
        # cache with the importer's path, reported only for importers not being scanned). The
        # importers run first: a helper defined here (``compile_model(model)``) records its
        # facts here when they call it with their models.
        reverse, importers, deps = [], None, set(an.__dict__.get("_deps", ()))
        analysed = []
        if index is not None and self.settings.link and _exports(an):
            index.start_recording()
            importers = index.importers(path)
            self._store_imports(index)
            analysed = [(other, index.analysis(other, force=True)) for other in importers]
            deps |= index.stop_recording() | set(importers)
        findings.extend(self.findings_of(an))
        for other, oan in analysed:
            if oan is not None:
                reverse.extend((other, f) for f in self.findings_of(oan) if self.display(path) in f.related)
        result = FileResult(path, findings + [f for other, f in reverse if other not in self.settings.scan_set], parsed=True)
        if index is None or not self.settings.cache:
            return result, None
        deps.discard(path)
        entry = {
            "own": [C.finding_to_json(f) for f in findings],
            "reverse": [[other, C.finding_to_json(f)] for other, f in reverse],
            "deps": self.caches[index.root].deps_record(deps),
            "files": self.files_digest(index),
            "importers": importers,
        }
        return result, entry

    # -- the persistent cache ----------------------------------------------------------
    def cache_for(self, path: str):
        """The cache of the file's project (None: caching off, or no cross-module links)."""
        if not self.settings.cache or not self.settings.link:
            return None
        index = self.index_for(path)
        cache = self.caches.get(index.root)
        if cache is None:
            from pytest_maskloss import __version__

            s = self.settings
            parts = (C.FORMAT, __version__, C.code_stamp(), index.root, repr(s.config), repr(index.target),
                     s.keras_version, s.cwd, ProjectIndex.MAX_DEPTH)
            cache = C.Cache(index.root, C.digest(repr(parts).encode()), s.cache_dir)
            self.caches[index.root] = cache
            index.stored_imports = cache.load_imports()
        return cache if cache.usable else None

    def files_digest(self, index: ProjectIndex) -> str:
        if index.root not in self._files_digest:
            self._files_digest[index.root] = C.digest("\n".join(index.files()).encode())
        return self._files_digest[index.root]

    def _store_imports(self, index: ProjectIndex) -> None:
        cache = self.caches.get(index.root)
        if cache is not None and index.imports_changed:
            cache.store_imports(index.stored_imports)
            index.imports_changed = False

    def _from_cache(self, cache, entry, path: str) -> FileResult | None:
        """The cached result, when everything it was computed from still holds."""
        if entry is None:
            return None
        index = self.index_for(path)
        try:
            if entry["files"] != self.files_digest(index) or not cache.deps_unchanged(entry["deps"]):
                return None
            if entry["importers"] is not None:
                if index.importers(path) != entry["importers"]:
                    return None
                self._store_imports(index)
            findings = [C.finding_from_json(d) for d in entry["own"]]
            findings += [C.finding_from_json(d) for other, d in entry["reverse"] if other not in self.settings.scan_set]
        except (KeyError, TypeError, ValueError, IndexError):
            return None  # an entry of another format
        return FileResult(path, findings, parsed=True, cached=True)

    def findings_of(self, an: A.ModuleAnalysis) -> list[Finding]:
        cached = an.__dict__.get("_findings")
        if cached is not None:
            return cached
        out, seen = [], set()
        for rule in R.RULES:
            try:
                raws = list(rule.check(an))
            except RecursionError:
                continue
            for raw in raws:
                f = self._finding(raw, rule)
                # a function run once per set of call arguments can yield one finding per call
                where = f and (f.code, f.path, f.cell, f.line, f.col, f.end_line, f.end_col)
                if f is not None and where not in seen and self._keep(raw.loc.module, f, raw.loc.unit):
                    seen.add(where)
                    out.append(f)
        an.__dict__["_findings"] = out
        return out

    def _finding(self, raw: R.Raw, rule) -> Finding | None:
        an = raw.loc.module
        pos = E.position(raw.loc)
        if pos is None:
            return None
        unit = an.units[raw.loc.unit]
        fix = raw.fix if isinstance(raw.fix, Fix) else None  # a fix that could not be built is None
        related = tuple(sorted(self.display(p) for p in raw.related if os.path.abspath(p) != an.path))
        col, end_col = unit.column_in_original(pos[0], pos[1]), unit.column_in_original(pos[2], pos[3])
        return Finding(
            path=self.display(an.path), line=pos[0], col=col + 1, code=rule.code,
            message=raw.message, end_line=pos[2], end_col=end_col + 1, cell=unit.cell, fix=fix,
            severity=raw.severity, rule=rule.name, related=related,
        )

    def _error_finding(self, path, line, col, cell, msg, severity="error") -> Finding:
        return Finding(
            path=self.display(path), line=max(1, line), col=max(1, col), code=PARSE_CODE,
            message=msg, cell=cell, severity=severity, rule=R.ParseError.name,
        )

    def _keep(self, an, f: Finding, unit: int) -> bool:
        if not self.settings.config.selected(f.code, an.path if an is not None else f.path):
            return False
        if an is None:
            return True
        cache = an.__dict__.setdefault("_noqa", {})
        if "file" not in cache:
            all_text = "\n".join(u.original for u in an.units)
            codes: set | None = set()
            for m in _FILE_NOQA.finditer(all_text):
                if m.group(1) is None:
                    codes = None
                    break
                codes |= _codes(m.group(1))
            cache["file"] = codes
        file_codes = cache["file"]
        if file_codes is None or f.code in file_codes:
            return False
        if unit >= len(an.units):
            return True
        if unit not in cache:
            cache[unit] = an.units[unit].original.splitlines()
        lines = cache[unit]
        for line_no in {f.line, f.end_line or f.line}:
            if 1 <= line_no <= len(lines) and "noqa" in lines[line_no - 1].lower():
                for m in _NOQA.finditer(lines[line_no - 1]):
                    codes = m.group(1)
                    if codes is None or f.code in _codes(codes):
                        return False
        return True


def _codes(text: str) -> set[str]:
    return {c.upper() for c in re.split(r"[\s,]+", text) if c}


# A module that provides a model, a layer or a loss to its importers names one of these: Keras
# itself as a word (``import keras``, ``tf.keras``; not any package that only starts with
# ``keras_``, such as ``keras_preprocessing``), a Keras package, or a kind of object the rules
# follow.
_PROVIDER = re.compile(
    rb"\b(?:keras|keras_core|tensorflow|tf_keras|keras_hub|keras_nlp)\b|Sequential|Model|Loss|Layer|Embedding|Masking|mask"
)


def _provides(data: bytes) -> bool:
    """Could this module provide a model, layer or loss to a module that imports it?"""
    return _PROVIDER.search(data) is not None


def _exports(an: A.ModuleAnalysis) -> bool:
    """Does this module define something another module could compile, fit or use as a loss,
    or a helper that compiles or fits the model it is given?"""
    values = list(an.globals.vars.values())
    # the same answer in any order (a function's returns() ran when its module ran, so here it
    # is a cached value with no side effects): the cheap tests first, the body walk last
    if any(isinstance(value, (V.ModelV, V.ClassRef, V.LayerV)) for value in values):
        return True
    functions = [value for value in values if isinstance(value, V.FuncRef)]
    if any(isinstance(f.returns(), (V.ModelV, V.ReductionV, V.FuncRef, V.LayerV)) for f in functions):
        return True
    helper = any(".compile(" in u.text or ".fit(" in u.text for u in an.units)
    return helper and any(_compiles_a_parameter(f.node) for f in functions)


def _compiles_a_parameter(fn) -> bool:
    """Does the function call ``compile``/``fit``/``evaluate`` on one of its parameters
    (``def compile_model(model): model.compile(...)``)?"""
    params = {p.name.value for p in fn.params.params}
    if not params:
        return False
    for node in walk(fn.body):
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) \
                and node.func.attr.value in ("compile", "fit", "evaluate") \
                and isinstance(node.func.value, cst.Name) and node.func.value.value in params:
            return True
    return False


def check_source(text: str, keras_version: str | None = None, path: str = "example.py", config: Config | None = None) -> list[Finding]:
    """Scan a source string (no files read, no project links). ``keras_version`` as in
    ``[tool.maskloss]``; None means unknown. Used by the rule tests and the flake8 plugin."""
    from pytest_maskloss.scan.source import Unit

    target = target_from_config_value(keras_version, "keras-version") if keras_version else UNKNOWN
    scanner = Scanner(Settings(config=config or Config(), link=False))
    scanner.targets[project_root(path)] = target
    units = [Unit(text=text, original=text)]
    modules, errors = [], []
    module, error = safe_parse(text)
    modules.append(module)
    if error is not None:
        errors.append(scanner._error_finding(path, error[0], error[1], None, error[2]))
    an = A.ModuleAnalysis(os.path.abspath(path), units, modules, target, None)
    an.display_path = scanner.display(path)
    an.run()
    return errors + scanner.findings_of(an)
