"""Which files a scan reads: files and folders given, ``.gitignore`` respected (a pure-Python
matcher, no git needed), virtual environments and build folders skipped, ``--exclude``."""

from __future__ import annotations

import os
import re

from pytest_maskloss.scan.config import path_matches
from pytest_maskloss.scan.project import SKIP_DIRS

EXTENSIONS = (".py", ".pyi", ".ipynb")


class GitIgnore:
    """The patterns of one .gitignore, relative to its folder."""

    def __init__(self, base: str, lines):
        self.base = base
        self.rules = []  # (regex, negate, dir_only)
        for raw in lines:
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            line = re.sub(r"(?<!\\)\s+$", "", line)
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            if line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            try:
                rx = re.compile(_glob_to_regex(line, anchored))
            except re.error:
                continue
            self.rules.append((rx, negate, dir_only))

    def match(self, rel: str, is_dir: bool):
        """True (ignored), False (re-included) or None (no pattern matched)."""
        result = None
        for rx, negate, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if rx.match(rel):
                result = not negate
        return result


def _glob_to_regex(pat: str, anchored: bool) -> str:
    out = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("/**", i) and i + 3 == len(pat):
            out.append("/.*")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    return ("^" if anchored else "^(?:.*/)?") + body + "$"


def _load_gitignore(folder: str) -> GitIgnore | None:
    path = os.path.join(folder, ".gitignore")
    if not os.path.isfile(path):  # also keeps FIFOs from blocking the scan
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return GitIgnore(folder, fh.readlines())
    except OSError:
        return None


def _git_root(path: str) -> str | None:
    cur = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(cur, ".git")):
            return cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def _ignored(path: str, is_dir: bool, ignores) -> bool:
    state = False
    for gi in ignores:
        rel = os.path.relpath(path, gi.base).replace(os.sep, "/")
        if rel.startswith(".."):
            continue
        r = gi.match(rel, is_dir)
        if r is not None:
            state = r
    return state


def _ancestor_ignores(folder: str) -> list:
    root = _git_root(folder)
    if root is None:
        return []
    chain = []
    cur = os.path.abspath(folder)
    while True:
        chain.append(cur)
        if cur == root:
            break
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    out = []
    for d in reversed(chain[1:]):  # the folder's own .gitignore is loaded by the walk
        gi = _load_gitignore(d)
        if gi is not None:
            out.append(gi)
    return out


def _skip_dir(dirpath: str, name: str) -> bool:
    if name in SKIP_DIRS or name.endswith(".egg-info"):
        return True
    return os.path.isfile(os.path.join(dirpath, name, "pyvenv.cfg"))


def discover(paths, exclude=(), force_exclude=False, respect_gitignore=True, base=None, warn=None):
    """Yield absolute file paths to scan, each once, in a stable order."""
    base = base or os.getcwd()
    seen = set()

    def excluded(path: str) -> bool:
        if not exclude:
            return False
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        if rel.startswith(".."):
            rel = path.replace(os.sep, "/")
        return any(path_matches(rel, p) for p in exclude)

    for given in paths:
        path = os.path.abspath(given)
        if not os.path.exists(path):
            if warn:
                warn(f"{given}: no such file or folder")
            continue
        if os.path.isfile(path):
            if force_exclude:
                if excluded(path):
                    continue
                if respect_gitignore and _explicitly_ignored(path):
                    continue
                if any(_skip_dir(os.path.dirname(p), os.path.basename(p)) for p in _parents_below(os.path.dirname(path), base)):
                    continue
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                yield path
            continue
        if not os.path.isdir(path):
            continue
        start_ignores = _ancestor_ignores(path) if respect_gitignore else []
        stack_ignores = {path: start_ignores}
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            ignores = stack_ignores.pop(dirpath, None)
            if ignores is None:
                ignores = start_ignores
            if respect_gitignore:
                gi = _load_gitignore(dirpath)
                if gi is not None:
                    ignores = ignores + [gi]
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if _skip_dir(dirpath, d) or os.path.islink(full):
                    continue
                if excluded(full) or (respect_gitignore and _ignored(full, True, ignores)):
                    continue
                keep.append(d)
                stack_ignores[full] = ignores
            dirnames[:] = keep
            for f in sorted(filenames):
                if not f.endswith(EXTENSIONS):
                    continue
                full = os.path.join(dirpath, f)
                if excluded(full) or (respect_gitignore and _ignored(full, False, ignores)):
                    continue
                if not os.path.isfile(full):  # broken symlink
                    continue
                real = os.path.realpath(full)
                if real in seen:
                    continue
                seen.add(real)
                yield full


def _explicitly_ignored(path: str) -> bool:
    """Is a file given by name ignored by a .gitignore (its own pattern or a folder's)?"""
    root = _git_root(os.path.dirname(path))
    if root is None:
        return False
    rel_parts = os.path.relpath(path, root).split(os.sep)
    ignores = []
    cur = root
    for part in rel_parts[:-1]:
        gi = _load_gitignore(cur)
        if gi is not None:
            ignores.append(gi)
        cur = os.path.join(cur, part)
        if _ignored(cur, True, ignores):
            return True
    gi = _load_gitignore(cur)
    if gi is not None:
        ignores.append(gi)
    return _ignored(path, False, ignores)


def _parents_below(folder: str, base: str):
    """``folder`` and its parents, stopping before ``base`` (or at the git root when ``folder``
    is not under ``base``): folders above the project are never reasons to skip."""
    base = os.path.abspath(base)
    stop = base if (folder + os.sep).startswith(base + os.sep) else (_git_root(folder) or folder)
    cur = folder
    while cur != stop:
        yield cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return
        cur = parent
