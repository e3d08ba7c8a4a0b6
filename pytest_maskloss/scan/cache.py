"""The persistent cache: a file's findings, kept in ``.maskloss_cache/`` at the project root
(ruff-like), so a file whose content and whose project context are unchanged is not parsed
again.

An entry is found by a hash of the file's bytes, its path, the scanner's code and version and
the settings (configuration, Keras target, working folder). It holds the findings and what
they were computed from: every project file the analysis asked for (size, mtime and content
hash; a file whose size or mtime changed is hashed again, so touching a file costs a hash, not
a parse), the list of the project's modules (adding or removing one can change what an import
resolves to) and the importers the reverse links were found through. The entry is used only
when all of those still hold.

Entries are JSON (never pickle: the cache folder lives in the scanned tree, and reading it must
never run code), one file per entry, written to a temporary file and renamed into place, so
concurrent runs (parallel workers, two pre-commit hooks) never see half an entry and the last
writer wins with a complete one. The reverse-import index (what each module imports) is kept
the same way, one file per project. Unreadable or foreign entries are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os

from pytest_maskloss.scan.findings import Edit, Finding, Fix
from pytest_maskloss.scan.source import write_atomic

DIR_NAME = ".maskloss_cache"
FORMAT = 1


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def code_stamp() -> str:
    """The scanner's own code, by the size and mtime of its modules (a development checkout
    invalidates its cache when a rule changes, without a version bump)."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts = []
    for folder in (here, os.path.join(here, "rules"), os.path.join(os.path.dirname(here), "compat")):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name.endswith(".py"):
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                parts.append(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return digest("\n".join(parts).encode())


def stat_of(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return digest(fh.read())
    except OSError:
        return None


def finding_to_json(f: Finding) -> dict:
    fix = None
    if f.fix is not None:
        fix = [f.fix.description, f.fix.safe, [[e.start, e.end, e.replacement, e.cell] for e in f.fix.edits]]
    return {
        "path": f.path, "line": f.line, "col": f.col, "code": f.code, "message": f.message,
        "end_line": f.end_line, "end_col": f.end_col, "cell": f.cell, "fix": fix,
        "severity": f.severity, "rule": f.rule, "related": list(f.related),
    }


def finding_from_json(d: dict) -> Finding:
    fix = d["fix"]
    if fix is not None:
        fix = Fix(fix[0], tuple(Edit(*e) for e in fix[2]), fix[1])
    return Finding(
        path=d["path"], line=d["line"], col=d["col"], code=d["code"], message=d["message"],
        end_line=d["end_line"], end_col=d["end_col"], cell=d["cell"], fix=fix,
        severity=d["severity"], rule=d["rule"], related=tuple(d["related"]),
    )


class Cache:
    """The cache of one project root (``root/.maskloss_cache``)."""

    def __init__(self, root: str, fingerprint: str, folder: str | None = None):
        self.root = root
        self.folder = folder or os.path.join(root, DIR_NAME)
        self.fingerprint = fingerprint
        self._checked: dict[str, bool] = {}  # dependency path -> unchanged (per run)
        self._records: dict[str, list] = {}  # dependency path -> [path, size, mtime, hash] (per run)
        self._ready = False
        self.usable = True

    # -- storage -----------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], key[2:] + ".json")

    def _prepare(self) -> bool:
        if self._ready:
            return self.usable
        self._ready = True
        try:
            os.makedirs(self.folder, exist_ok=True)
            marker = os.path.join(self.folder, ".gitignore")
            if not os.path.exists(marker):
                write_atomic(marker, b"# created by maskloss scan\n*\n")
                write_atomic(os.path.join(self.folder, "CACHEDIR.TAG"),
                              b"Signature: 8a477f597d28d172789f06886806bc55\n# maskloss scan cache\n")
        except OSError:
            self.usable = False
        return self.usable

    def read(self, key: str):
        try:
            with open(self._path(key), "rb") as fh:
                entry = json.loads(fh.read())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        return entry

    def write(self, key: str, entry: dict) -> None:
        if not self._prepare():
            return
        entry = dict(entry, format=FORMAT)
        try:
            os.makedirs(os.path.dirname(self._path(key)), exist_ok=True)
            write_atomic(self._path(key), json.dumps(entry, separators=(",", ":")).encode())
        except (OSError, TypeError, ValueError):
            pass

    # -- keys and validity -------------------------------------------------------------
    def key(self, path: str, data: bytes) -> str:
        return digest(f"{self.fingerprint}\0{os.path.abspath(path)}\0".encode() + data)

    def deps_record(self, paths) -> list:
        """Each dependency's size, mtime and content hash, taken once per run (a Cache serves
        one scan; the entries of files that import the same modules share the records)."""
        out = []
        for p in sorted(paths):
            record = self._records.get(p)
            if record is None:
                st = stat_of(p)
                record = [p, None, None, None] if st is None else [p, st[0], st[1], file_digest(p)]
                self._records[p] = record
            out.append(record)
        return out

    def deps_unchanged(self, record) -> bool:
        for p, size, mtime, hashed in record:
            ok = self._checked.get(p)
            if ok is None:
                st = stat_of(p)
                if st is None or size is None:
                    ok = st is None and size is None
                elif st == (size, mtime):
                    ok = True
                else:
                    ok = file_digest(p) == hashed
                self._checked[p] = ok
            if not ok:
                return False
        return True

    # -- the reverse-import index ------------------------------------------------------
    def _imports_path(self) -> str:
        return os.path.join(self.folder, f"imports-{self.fingerprint[:16]}.json")

    def load_imports(self) -> dict:
        """path -> (size, mtime_ns, words, user) as last stored."""
        try:
            with open(self._imports_path(), "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return {}
        return data.get("files", {})

    def store_imports(self, files: dict) -> None:
        if not self._prepare():
            return
        try:
            write_atomic(self._imports_path(), json.dumps({"format": FORMAT, "files": files}, separators=(",", ":")).encode())
        except (OSError, TypeError, ValueError):
            pass


