"""``[tool.maskloss]`` configuration and the Keras version a project targets."""

from __future__ import annotations

import ast
import fnmatch
import functools
import os
import re
from dataclasses import dataclass, field

try:  # Python >= 3.11
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:
        _toml = None


class ConfigError(Exception):
    """A configuration or usage error: reported with exit status 2."""


# ------------------------------------------------------------------------------------------
# TOML


def load_toml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: not a regular file")
    with open(path, "rb") as fh:
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    if _toml is not None:
        try:
            return _toml.loads(text)
        except Exception as exc:  # tomllib.TOMLDecodeError
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _mini_toml(text)


def _mini_toml(text: str) -> dict:  # pragma: no cover - only without tomllib/tomli
    """Enough TOML for pyproject tables of strings, booleans and arrays (Python 3.10 without
    tomli)."""
    root: dict = {}
    table = root
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].split("#", 1)[0].strip() if '"' not in lines[i] else lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^\[([^\[\]]+)\]$", line)
        if m:
            table = root
            for part in _split_key(m.group(1)):
                table = table.setdefault(part, {})
            continue
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        while value.count("[") > value.count("]") and i < len(lines):
            value += "\n" + lines[i]
            i += 1
        value = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", value))
        value = re.sub(r"(?m)#[^\"'\n]*$", "", value)
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        parts = _split_key(key.strip())
        target = table
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = parsed
    return root


def _split_key(key: str) -> list[str]:
    return [p.strip().strip('"').strip("'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', key)]


# ------------------------------------------------------------------------------------------
# Keras version


@dataclass(frozen=True)
class KerasTarget:
    """The Keras a project targets. ``kind``: ``tf.keras<2.11`` (padding in the denominator),
    ``keras2`` (tf.keras 2.11-2.15 or tf_keras), ``keras3``, or ``unknown``."""

    kind: str
    version: tuple[int, ...] | None = None  # Keras version when known
    source: str = ""

    @property
    def padding_in_denominator(self) -> bool | None:
        if self.kind == "unknown":
            return None
        return self.kind == "tf.keras<2.11"

    @property
    def is_keras3(self) -> bool | None:
        if self.kind == "unknown":
            return None
        return self.kind == "keras3"

    @property
    def has_mean_with_sample_weight(self) -> bool | None:
        """Keras >= 3.7 has ``reduction="mean_with_sample_weight"``."""
        if self.kind != "keras3":
            return None if self.kind == "unknown" else False
        if self.version is None or len(self.version) < 2:
            return None
        return self.version[:2] >= (3, 7)

    def describe(self) -> str:
        if self.kind == "unknown":
            return "Keras version unknown" + (f" ({self.source})" if self.source else "")
        label = {
            "tf.keras<2.11": "tf.keras < 2.11",
            "keras2": "tf.keras >= 2.11 / tf_keras",
            "keras3": "Keras 3",
        }[self.kind]
        if self.version:
            label = {
                "tf.keras<2.11": "tf.keras",
                "keras2": "Keras",
                "keras3": "Keras",
            }[self.kind] + " " + ".".join(map(str, self.version))
        return f"{label}, from {self.source}" if self.source else label


UNKNOWN = KerasTarget("unknown", None, "no keras-version in [tool.maskloss] and no pins found")


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)", text)
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def target_from_keras_version(v: tuple[int, ...], source: str) -> KerasTarget:
    if v[:1] >= (3,):
        return KerasTarget("keras3", v, source)
    if v[:2] >= (2, 11):
        return KerasTarget("keras2", v, source)
    return KerasTarget("tf.keras<2.11", v, source)


def target_from_config_value(value: str, source: str) -> KerasTarget:
    text = str(value).strip().lower()
    if text in ("tf-keras", "tf_keras"):
        return KerasTarget("keras2", None, source)
    if text in ("unknown", "auto", ""):
        return KerasTarget("unknown", None, source)
    v = parse_version(text)
    if v is None or re.search(r"[^0-9.]", text.lstrip("v")):
        raise ConfigError(
            f"{source}: keras-version must be a version such as \"2.10\", \"2.15\", \"3.7\" "
            f"or \"tf-keras\", got {value!r}"
        )
    return target_from_keras_version(v, source)


_PIN = re.compile(
    r"""^\s*["']?(tensorflow(?:[-_](?:cpu|gpu|macos|intel|aarch64))?|tf[-_]keras|keras|tf[-_]nightly)\s*
    (?:\[[^\]]*\])?\s*(\(?\s*[<>=!~][^;#"'\n]*)?""",
    re.X | re.I,
)


def _bounds(spec: str):
    """(lo, lo_inclusive, hi, hi_inclusive) from a specifier list; None = unbounded."""
    lo = hi = None
    lo_inc = hi_inc = True
    for part in spec.replace("(", "").replace(")", "").split(","):
        part = part.strip()
        m = re.match(r"^(===|==|~=|>=|<=|>|<|!=)\s*([0-9][0-9.*a-z]*)", part)
        if not m:
            continue
        op, ver = m.groups()
        v = parse_version(ver)
        if v is None:
            continue
        if op in ("==", "==="):
            if ver.endswith("*"):
                lo, lo_inc = v, True
                hi, hi_inc = v[:-1] + (v[-1] + 1,) if v else v, False
            else:
                lo = hi = v
                lo_inc = hi_inc = True
        elif op == "~=":
            lo, lo_inc = v, True
            base = v[:-1] if len(v) > 1 else v
            hi, hi_inc = base[:-1] + (base[-1] + 1,), False
        elif op in (">=", ">"):
            lo, lo_inc = v, op == ">="
        elif op in ("<=", "<"):
            hi, hi_inc = v, op == "<="
    return lo, lo_inc, hi, hi_inc


def _classes(lo, hi, hi_inc, thresholds):
    def cls(v):
        return sum(1 for t in thresholds if v >= t)

    lo_c = cls(lo) if lo is not None else 0
    if hi is None:
        hi_c = len(thresholds)
    elif hi_inc:
        hi_c = cls(hi)
    else:
        hi_c = sum(1 for t in thresholds if hi > t)
    return lo_c, hi_c


def target_from_pins(pins: list[tuple[str, str, str]]) -> KerasTarget:
    """Decide from (package, specifier, where) triples."""
    by_pkg: dict[str, tuple[str, str]] = {}
    for pkg, spec, where in pins:
        name = pkg.lower().replace("_", "-")
        if name.startswith("tensorflow") or name == "tf-nightly":
            name = "tensorflow"
        if name not in by_pkg or (spec and not by_pkg[name][0]):
            by_pkg[name] = (spec, where)
    kinds = ["tf.keras<2.11", "keras2", "keras3"]
    if "keras" in by_pkg:
        spec, where = by_pkg["keras"]
        lo, _, hi, hi_inc = _bounds(spec)
        a, b = _classes(lo, hi, hi_inc, [(2, 11), (3,)])
        if a == b:
            version = lo if (lo is not None and (lo == hi or a == 2)) else None
            return KerasTarget(kinds[a], version, f"{where}: keras{spec}")
        if lo is not None and lo >= (3,):
            return KerasTarget("keras3", lo, f"{where}: keras{spec}")
    if "tf-keras" in by_pkg:
        spec, where = by_pkg["tf-keras"]
        return KerasTarget("keras2", None, f"{where}: tf-keras{spec}")
    if "tensorflow" in by_pkg:
        spec, where = by_pkg["tensorflow"]
        lo, _, hi, hi_inc = _bounds(spec)
        a, b = _classes(lo, hi, hi_inc, [(2, 11), (2, 16)])
        label = f"{where}: tensorflow{spec}"
        if a == b:
            version = lo if (lo is not None and lo == hi and a < 2) else None
            return KerasTarget(kinds[a], version, label)
        return KerasTarget("unknown", None, f"{label} allows versions before and after 2.11")
    return UNKNOWN


def find_pins(root: str) -> list[tuple[str, str, str]]:
    pins: list[tuple[str, str, str]] = []
    candidates = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return pins
    for name in names:
        if fnmatch.fnmatch(name, "requirements*.txt") or fnmatch.fnmatch(name, "constraints*.txt"):
            candidates.append(os.path.join(root, name))
    req_dir = os.path.join(root, "requirements")
    if os.path.isdir(req_dir):
        try:
            candidates += [os.path.join(req_dir, n) for n in sorted(os.listdir(req_dir)) if n.endswith(".txt")]
        except OSError:
            pass
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    _match_pin(line, os.path.basename(path), pins)
        except OSError:
            continue
    pyproject = os.path.join(root, "pyproject.toml")
    if os.path.isfile(pyproject):
        try:
            data = load_toml(pyproject)
        except (ConfigError, OSError):
            data = {}
        project = data.get("project", {}) if isinstance(data, dict) else {}
        deps = list(project.get("dependencies", []) or []) if isinstance(project, dict) else []
        for item in deps:
            if isinstance(item, str):
                _match_pin(item, "pyproject.toml", pins)
        poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {}) if isinstance(data, dict) else {}
        if isinstance(poetry, dict):
            for pkg, spec in poetry.items():
                if isinstance(spec, dict):
                    spec = spec.get("version", "")
                if isinstance(spec, str):
                    spec = spec.strip()
                    if spec.startswith("^"):
                        v = parse_version(spec[1:])
                        if v:
                            spec = f">={spec[1:]},<{v[0] + 1}"
                    elif spec and spec[0].isdigit():
                        spec = "==" + spec
                    elif spec == "*":
                        spec = ""
                    _match_pin(f"{pkg}{spec}", "pyproject.toml", pins)
    setup_cfg = os.path.join(root, "setup.cfg")
    if os.path.isfile(setup_cfg):
        try:
            with open(setup_cfg, encoding="utf-8", errors="replace") as fh:
                in_requires = False
                for line in fh:
                    if re.match(r"^\s*install_requires\s*=", line):
                        in_requires = True
                        _match_pin(line.split("=", 1)[1], "setup.cfg", pins)
                        continue
                    if in_requires:
                        if line.strip() and not line[:1].isspace():
                            in_requires = False
                        else:
                            _match_pin(line, "setup.cfg", pins)
        except OSError:
            pass
    return pins


def _match_pin(line: str, where: str, pins: list) -> None:
    m = _PIN.match(line)
    if not m:
        return
    rest = line[m.end(1):]
    if rest[:1] and (rest[:1].isalnum() or rest[:1] in "-_."):
        return  # e.g. tensorflow-datasets, keras-hub
    pins.append((m.group(1), (m.group(2) or "").strip(), where))


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
        target_from_config_value(str(value), f"{where} keras-version")  # validate now
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


def keras_target(root: str, cfg: Config | None, override: str | None = None) -> KerasTarget:
    if override:
        return target_from_config_value(override, "--keras-version")
    if cfg is not None and cfg.keras_version:
        return target_from_config_value(cfg.keras_version, "[tool.maskloss] keras-version")
    return target_from_pins(find_pins(root))  # cached per run by the Scanner
