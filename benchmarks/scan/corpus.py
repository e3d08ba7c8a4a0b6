"""The benchmark corpus: the rules' own examples and real code without Keras.

Keras files: every rule's VALID, INVALID and fixed examples (MSK900 aside) in deterministic
variants (local names renamed, ``model`` -> ``model_3``); only MSK001's INVALID ones should get
MSK001. Files without Keras: the running interpreter's standard library (sources that compile;
reused under new names when more files are asked for)."""

import os
import random
import re
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

from pytest_maskloss.scan.rules import RULES

RENAMED = ("model", "inp", "out", "x", "history", "weights", "loss_fn", "ppl", "per_token")


@dataclass
class CorpusFile:
    relpath: str
    keras: bool
    kind: str  # "MSK001-invalid-2", ... or "stdlib"
    expect_msk001: bool = False
    size: int = 0


def examples():
    """(kind, source, expect MSK001) for every example of every rule."""
    for rule in RULES:
        for i, text in enumerate(rule.VALID):
            yield f"{rule.code}-valid-{i}", textwrap.dedent(text), False
        for i, ex in enumerate(rule.INVALID):
            yield f"{rule.code}-invalid-{i}", textwrap.dedent(ex.code), rule.code == "MSK001"
            yield f"{rule.code}-fixed-{i}", textwrap.dedent(ex.fixed), False


def variant(source: str, n: int) -> str:
    """``source`` with its local names renamed (attributes and strings untouched)."""
    if n == 0:
        return source
    for name in RENAMED:
        source = re.sub(rf"(?<![.\w\"']){name}(?![\w\"'])", f"{name}_{n}", source)
    return f'"""Variant {n}."""\n' + source


def stdlib_sources() -> list[Path]:
    out, root = [], Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(".py") and path.stat().st_size < 400_000:
                try:
                    compile(path.read_bytes(), str(path), "exec", 1024, dont_inherit=True)
                except (SyntaxError, ValueError):
                    continue
                out.append(path)
    return out


def build_corpus(root: Path, n_files: int, seed: int, keras_share: float = 0.2) -> list[CorpusFile]:
    rng = random.Random(seed)
    cases = list(examples())
    n_keras = round(n_files * keras_share)
    files = []
    for i in range(n_keras):
        kind, source, expect = cases[i % len(cases)]
        rel = f"keras/k{i:05d}_{kind}.py"
        files.append(CorpusFile(rel, True, kind, expect))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(variant(source, i // len(cases)))
    plain = stdlib_sources()
    rng.shuffle(plain)
    for i in range(n_files - n_keras):
        src = plain[i % len(plain)]
        rel = f"plain/p{i:05d}_{src.stem}.py"
        files.append(CorpusFile(rel, False, "stdlib"))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(src.read_bytes())
    for f in files:
        f.size = (root / f.relpath).stat().st_size
    return files


def link_subset(root: Path, files: list[CorpusFile], dest: Path) -> None:
    """Mirror ``files`` under ``dest`` with hard links (copies as a fallback)."""
    for f in files:
        target = dest / f.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(root / f.relpath, target)
        except OSError:
            target.write_bytes((root / f.relpath).read_bytes())
