"""The Keras version a scanned project targets: ``--keras-version``, ``[tool.maskloss]
keras-version``, or the pins of the project (requirements files, ``pyproject.toml``,
``setup.cfg``).

What a flavour or a version does to a masked loss is asked of
:mod:`pytest_maskloss.compat.flavours`; this module only works out which flavour and version
(or version range) the project means.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass

from pytest_maskloss.compat import flavours
from pytest_maskloss.scan.config import Config, ConfigError, keras_version_value, load_toml

_HIGHEST = (9999,)
_LOWEST = (0,)


@dataclass(frozen=True)
class KerasTarget:
    """The Keras a project targets.

    ``flavour`` is one of ``flavours.FLAVOURS`` (None: unknown). ``version`` is the Keras (or,
    for tf.keras, TensorFlow) version when one is known, as shown in messages; ``probe`` is a
    version inside the pinned range that the version facts are asked about when ``version``
    is not known.
    """

    flavour: str | None
    version: tuple[int, ...] | None = None
    source: str = ""
    probe: tuple[int, ...] | None = None

    @property
    def _facts_version(self):
        return self.version or self.probe

    @property
    def padding_in_denominator(self) -> bool | None:
        return flavours.padding_in_denominator(self.flavour, self._facts_version)

    @property
    def is_keras3(self) -> bool | None:
        return None if self.flavour is None else self.flavour == flavours.KERAS3

    @property
    def has_mean_with_sample_weight(self) -> bool | None:
        """Does the targeted Keras offer ``reduction="mean_with_sample_weight"``?"""
        return flavours.has_mean_with_sample_weight(self.flavour, self.version)

    @property
    def attention_clears_input_masks(self) -> bool | None:
        return flavours.attention_clears_input_masks(self.flavour, self.version)

    @property
    def merge_drops_mask_of_partly_masked_inputs(self) -> bool | None:
        return flavours.merge_drops_mask_of_partly_masked_inputs(self.flavour, self.version)

    @property
    def merge_drops_mask_of_masked_inputs(self) -> bool:
        return flavours.merge_drops_mask_of_masked_inputs(self.flavour, self.version)

    @property
    def ignore_class_divides_by_real_tokens(self) -> bool | None:
        return flavours.ignore_class_divides_by_real_tokens(self.flavour, self._facts_version)

    def negative_labels_scored_zero(self, backend: str | None) -> bool | None:
        """``backend``: the one the scanned file selects (``KERAS_BACKEND``), if any."""
        return flavours.negative_labels_scored_zero(self.flavour, backend)

    @property
    def mask_zero_positions(self) -> tuple[int, ...]:
        """0-based positions ``Embedding``'s ``mask_zero`` may take as a positional argument."""
        return flavours.mask_zero_index(self.flavour)

    def describe(self) -> str:
        if self.flavour is None:
            return "Keras version unknown" + (f" ({self.source})" if self.source else "")
        if self.flavour == flavours.KERAS3:
            label = "Keras " + (".".join(map(str, self.version)) if self.version else "3")
        elif self.padding_in_denominator:
            label = "tf.keras " + (".".join(map(str, self.version)) if self.version else "< 2.11")
        else:
            label = ("Keras " + ".".join(map(str, self.version))) if self.version else "tf.keras >= 2.11 / tf_keras"
        return f"{label}, from {self.source}" if self.source else label


UNKNOWN = KerasTarget(None, None, "no keras-version in [tool.maskloss] and no pins found")


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)", text)
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def _keras_package_flavour(v: tuple[int, ...]) -> str | None:
    """The flavour a ``keras`` package of version ``v`` provides."""
    return flavours.flavour_of_package("keras", v[0] if v else None)


def target_from_keras_version(v: tuple[int, ...], source: str) -> KerasTarget:
    return KerasTarget(_keras_package_flavour(v), v, source)


def target_from_config_value(value: str, source: str) -> KerasTarget:
    text = keras_version_value(value, source)
    if text.replace("-", "_") == flavours.TF_KERAS:
        return KerasTarget(flavours.TF_KERAS, None, source)
    if text in ("unknown", "auto", ""):
        return KerasTarget(None, None, source)
    return target_from_keras_version(parse_version(text), source)


# ------------------------------------------------------------------------------------------
# pins

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


def _below(v: tuple[int, ...]) -> tuple[int, ...]:
    """A version just below ``v`` (for an exclusive upper bound)."""
    v = tuple(v)
    while len(v) > 1 and v[-1] == 0:
        v = v[:-1]
    if v[-1] == 0:
        return _LOWEST
    return v[:-1] + (v[-1] - 1, 9999)


def _ends(spec: str):
    """(lowest, highest) versions a specifier allows, as probes; and the exact lower bound."""
    lo, _, hi, hi_inc = _bounds(spec)
    low = lo if lo is not None else _LOWEST
    high = _HIGHEST if hi is None else (hi if hi_inc else _below(hi))
    return low, high, lo, hi


def _behaviour(flavour, v):
    return flavour, flavours.padding_in_denominator(flavour, v)


def target_from_pins(pins: list[tuple[str, str, str]]) -> KerasTarget:
    """Decide from (package, specifier, where) triples: a range decides when every version in
    it behaves alike (same flavour, same padding fact)."""
    by_pkg: dict[str, tuple[str, str]] = {}
    for pkg, spec, where in pins:
        name = pkg.lower().replace("-", "_")
        if name.startswith("tensorflow") or name == "tf_nightly":
            name = "tensorflow"
        if name not in by_pkg or (spec and not by_pkg[name][0]):
            by_pkg[name] = (spec, where)
    keras_pkg, tf_keras_pkg, tf_pkg = flavours.KERAS_PACKAGES
    if keras_pkg in by_pkg:
        spec, where = by_pkg[keras_pkg]
        low, high, lo, hi = _ends(spec)
        a = _behaviour(_keras_package_flavour(low), low)
        if a == _behaviour(_keras_package_flavour(high), high) or a[0] == flavours.KERAS3:
            version = lo if (lo is not None and (lo == hi or a[0] == flavours.KERAS3)) else None
            return KerasTarget(a[0], version, f"{where}: keras{spec}", low)
    if tf_keras_pkg in by_pkg:
        spec, where = by_pkg[tf_keras_pkg]
        return KerasTarget(flavours.TF_KERAS, None, f"{where}: tf-keras{spec}")
    if tf_pkg in by_pkg:
        spec, where = by_pkg[tf_pkg]
        low, high, lo, hi = _ends(spec)
        flavour = flavours.flavour_of_tensorflow(low)
        a = _behaviour(flavour, low)
        label = f"{where}: tensorflow{spec}"
        if a == _behaviour(flavours.flavour_of_tensorflow(high), high):
            exact = lo if (lo is not None and lo == hi and flavour != flavours.KERAS3) else None
            return KerasTarget(flavour, exact, label, low)
        return KerasTarget(None, None, f"{label} allows versions before and after 2.11")
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
    _pyproject_pins(os.path.join(root, "pyproject.toml"), pins)
    _setup_cfg_pins(os.path.join(root, "setup.cfg"), pins)
    return pins


def _pyproject_pins(pyproject: str, pins: list) -> None:
    if not os.path.isfile(pyproject):
        return
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
    if not isinstance(poetry, dict):
        return
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


def _setup_cfg_pins(setup_cfg: str, pins: list) -> None:
    if not os.path.isfile(setup_cfg):
        return
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


def _match_pin(line: str, where: str, pins: list) -> None:
    m = _PIN.match(line)
    if not m:
        return
    rest = line[m.end(1):]
    if rest[:1] and (rest[:1].isalnum() or rest[:1] in "-_."):
        return  # e.g. tensorflow-datasets, keras-hub
    pins.append((m.group(1), (m.group(2) or "").strip(), where))


def keras_target(root: str, cfg: Config | None, override: str | None = None) -> KerasTarget:
    if override:
        return target_from_config_value(override, "--keras-version")
    if cfg is not None and cfg.keras_version:
        return target_from_config_value(cfg.keras_version, "[tool.maskloss] keras-version")
    return target_from_pins(find_pins(root))  # cached per run by the Scanner
