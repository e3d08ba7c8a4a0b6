"""Reading the configuration: TOML files and the ``[tool.maskloss]`` table (rule selection,
excludes, per-file ignores, ``keras-version``), and where a project's root is.

Which Keras a project targets is worked out in :mod:`pytest_maskloss.scan.target`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import sys
from dataclasses import dataclass, field

from pytest_maskloss.compat import flavours

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - Python 3.10 (a declared dependency there)
    import tomli as _toml


class ConfigError(Exception):
    """A configuration or usage error: reported with exit status 2."""


# ------------------------------------------------------------------------------------------
# TOML


def load_toml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: not a regular file")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return _toml.loads(data.decode("utf-8", errors="replace"))
    except Exception as exc:  # TOMLDecodeError
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


# ------------------------------------------------------------------------------------------
# [tool.maskloss]

KNOWN_KEYS = {
    "select", "ignore", "extend-select", "extend-ignore", "per-file-ignores", "exclude",
    "extend-exclude", "force-exclude", "keras-version", "respect-gitignore",
}


@dataclass
class Config:
    select: list[str] = field(default_factory=lambda: ["ALL"])
    ignore: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    extend_exclude: list[str] = field(default_factory=list)
    force_exclude: bool = False
    respect_gitignore: bool = True
    keras_version: str | None = None
    path: str | None = None  # the pyproject.toml it came from
    root: str | None = None  # its folder

    def selected(self, code: str, path: str | None = None) -> bool:
        if not _matches(code, self.select) or _matches(code, self.ignore):
            return False
        if path is not None and self.per_file_ignores:
            rel = _relative(path, self.root)
            for pattern, codes in self.per_file_ignores.items():
                if path_matches(rel, pattern) and _matches(code, codes):
                    return False
        return True


def _relative(path: str, root: str | None) -> str:
    path = os.path.abspath(path)
    if root:
        try:
            rel = os.path.relpath(path, root)
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        except ValueError:
            pass
    return path.replace(os.sep, "/")


def path_matches(rel: str, pattern: str) -> bool:
    """ruff-like matching: a pattern matches the path, any of its parents, or its base name."""
    pattern = pattern.replace(os.sep, "/").rstrip("/")
    if pattern.startswith("./"):
        pattern = pattern[2:]
    parts = rel.split("/")
    for i in range(len(parts), 0, -1):
        if fnmatch.fnmatchcase("/".join(parts[:i]), pattern):
            return True
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(p, pattern) for p in parts)
    return False


def _matches(code: str, patterns: list[str]) -> bool:
    return any(p == "ALL" or code.startswith(p) for p in patterns)


KERAS_VERSION_WORDS = ("tf-keras", flavours.TF_KERAS, "unknown", "auto", "")


def keras_version_value(value, where: str) -> str:
    """A ``keras-version`` value, stripped and lowercased: a version (``"2.10"``, ``"3.7"``) or
    one of ``KERAS_VERSION_WORDS``; ConfigError for anything else."""
    text = str(value).strip().lower()
    if text in KERAS_VERSION_WORDS or (re.match(r"v?\d", text) and not re.search(r"[^0-9.]", text.lstrip("v"))):
        return text
    raise ConfigError(
        f"{where}: keras-version must be a version such as \"2.10\", \"2.15\", \"3.7\" "
        f"or \"tf-keras\", got {value!r}"
    )


def validate_codes(codes, known: set[str], where: str) -> list[str]:
    if isinstance(codes, str):
        codes = [c for c in re.split(r"[,\s]+", codes) if c]
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise ConfigError(f"{where}: expected a list of rule codes")
    out = []
    for code in codes:
        code = code.strip().upper()
        if code != "ALL" and not any(k.startswith(code) for k in known):
            raise ConfigError(
                f"{where}: unknown rule code or prefix {code!r} (known: {', '.join(sorted(known))}, ALL)"
            )
        out.append(code)
    return out


def find_pyproject(start: str) -> str | None:
    cur = os.path.abspath(start)
    if not os.path.isdir(cur):
        cur = os.path.dirname(cur)
    while True:
        candidate = os.path.join(cur, "pyproject.toml")
        if os.path.isfile(candidate):
            try:
                data = load_toml(candidate)
            except (ConfigError, OSError):
                data = None
            if data is not None and "maskloss" in data.get("tool", {}):
                return candidate
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def load_config(path: str | None, known_codes: set[str]) -> Config:
    if path is None:
        return Config()
    try:
        data = load_toml(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    section = data.get("tool", {}).get("maskloss")
    cfg = Config(path=path, root=os.path.dirname(os.path.abspath(path)))
    if section is None:
        return cfg
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.maskloss] must be a table")
    where = f"{path}: [tool.maskloss]"
    unknown = sorted(set(section) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(KNOWN_KEYS))})")
    if "select" in section:
        cfg.select = validate_codes(section["select"], known_codes, f"{where} select")
    if "extend-select" in section:
        cfg.select = cfg.select + validate_codes(section["extend-select"], known_codes, f"{where} extend-select")
    if "ignore" in section:
        cfg.ignore = validate_codes(section["ignore"], known_codes, f"{where} ignore")
    if "extend-ignore" in section:
        cfg.ignore = cfg.ignore + validate_codes(section["extend-ignore"], known_codes, f"{where} extend-ignore")
    pfi = section.get("per-file-ignores", {})
    if not isinstance(pfi, dict):
        raise ConfigError(f"{where} per-file-ignores: expected a table of pattern = [codes]")
    cfg.per_file_ignores = {
        str(k): validate_codes(v, known_codes, f"{where} per-file-ignores {k!r}") for k, v in pfi.items()
    }
    for key in ("exclude", "extend-exclude"):
        value = section.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} {key}: expected a list of glob patterns")
        setattr(cfg, key.replace("-", "_"), value)
    for key in ("force-exclude", "respect-gitignore"):
        if key in section:
            if not isinstance(section[key], bool):
                raise ConfigError(f"{where} {key}: expected true or false")
            setattr(cfg, key.replace("-", "_"), section[key])
    if "keras-version" in section:
        value = section["keras-version"]
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where} keras-version: expected a string such as \"2.10\"")
        keras_version_value(str(value), f"{where} keras-version")  # validate now
        cfg.keras_version = str(value)
    return cfg


def project_root(path: str) -> str:
    """The nearest folder above ``path`` holding pyproject.toml, setup.cfg, setup.py or .git;
    else the file's own folder."""
    start = os.path.abspath(path)
    return _root_of_dir(start if os.path.isdir(start) else os.path.dirname(start))


@functools.lru_cache(maxsize=4096)
def _root_of_dir(cur: str) -> str:
    first = cur
    while True:
        for marker in ("pyproject.toml", ".git", "setup.cfg", "setup.py"):
            if os.path.exists(os.path.join(cur, marker)):
                return cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return first
        cur = parent
