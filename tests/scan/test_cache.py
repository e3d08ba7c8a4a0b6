"""The persistent cache and parallel scans give the same findings as one process without a
cache; an entry is used only while every file it was computed from is unchanged."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_maskloss.scan.rules import RULES
from tests.scan.conftest import write

MODELS = """\
import tensorflow as tf

def build(vocab):
    return tf.keras.Sequential([tf.keras.layers.Embedding(vocab, 8, mask_zero=True), tf.keras.layers.Dense(vocab)])
"""
TRAIN = """\
from models import build

model = build(100)
model.compile("adam", "sparse_categorical_crossentropy")
"""


def _project(root):
    write(root / "pyproject.toml", "[project]\nname = 'p'\n")
    write(root / "models.py", MODELS)
    write(root / "train.py", TRAIN)
    # every rule's examples, so that each rule has findings to keep or lose
    for rule in RULES:
        for i, ex in enumerate(rule.INVALID):
            write(root / "examples" / f"{rule.code.lower()}_{i}.py", textwrap.dedent(ex.code))
        for i, text in enumerate(rule.VALID):
            write(root / "examples" / f"{rule.code.lower()}_ok_{i}.py", textwrap.dedent(text))


def _scan(root, *args):
    """The CLI in a fresh process (as a user or pre-commit runs it): (findings, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_maskloss", "scan", *args, "--output-format", "json", "--keras-version", "2.10"],
        cwd=root, capture_output=True, text=True, env=env,
    )
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    return sorted(json.dumps(f, sort_keys=True) for f in data), proc.stderr


def test_findings_equal_with_and_without_cache_and_jobs(tmp_path):
    _project(tmp_path)
    reference, _ = _scan(tmp_path, ".", "-j", "1", "--no-cache")
    assert any('"MSK001"' in f and "train.py" in f for f in reference)  # the cross-module finding
    assert len({json.loads(f)["code"] for f in reference}) >= 5
    cold, err = _scan(tmp_path, ".", "-j", "1")
    assert "from the cache" not in err and (tmp_path / ".maskloss_cache").is_dir()
    warm, err = _scan(tmp_path, ".", "-j", "1")
    assert "from the cache" in err
    parallel_cold, _ = _scan(tmp_path, ".", "-j", "2", "--cache-dir", str(tmp_path / "other-cache"))
    parallel_warm, err = _scan(tmp_path, ".", "-j", "2", "--cache-dir", str(tmp_path / "other-cache"))
    assert "from the cache" in err
    assert cold == warm == parallel_cold == parallel_warm == reference
    # one file at a time, as pre-commit passes them, from the warm cache
    singles = []
    for path in ("train.py", "models.py"):
        singles += _scan(tmp_path, path)[0]
    assert sorted(singles) == sorted(_scan(tmp_path, "train.py", "--no-cache")[0] + _scan(tmp_path, "models.py", "--no-cache")[0])
    assert not (tmp_path / ".maskloss_cache" / "examples").exists()  # entries only, not a copy of the tree


def test_a_changed_dependency_invalidates_the_entry(tmp_path):
    _project(tmp_path)
    first, _ = _scan(tmp_path, "train.py")
    assert [json.loads(f)["code"] for f in first] == ["MSK001"]
    # the imported module changes: the model it builds is no longer masked
    write(tmp_path / "models.py", MODELS.replace("mask_zero=True", "mask_zero=False"))
    after, err = _scan(tmp_path, "train.py")
    assert after == _scan(tmp_path, "train.py", "--no-cache")[0]
    assert [json.loads(f)["code"] for f in after] == []
    # touched, content unchanged: still from the cache
    os.utime(tmp_path / "models.py", ns=(1, 1))
    _, err = _scan(tmp_path, "train.py")
    assert "from the cache" in err


def test_a_new_importer_is_found_with_a_warm_cache(tmp_path):
    _project(tmp_path)
    (tmp_path / "train.py").unlink()
    assert _scan(tmp_path, "models.py")[0] == []
    write(tmp_path / "train2.py", TRAIN)
    found, _ = _scan(tmp_path, "models.py")
    assert [(json.loads(f)["code"], json.loads(f)["path"]) for f in found] == [("MSK001", "train2.py")]


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"format": 1, "own": 5}', b"\x80\x04K\x01."])
def test_broken_or_foreign_entries_are_ignored(tmp_path, garbage):
    _project(tmp_path)
    reference, _ = _scan(tmp_path, "train.py")
    for dirpath, _, names in os.walk(tmp_path / ".maskloss_cache"):
        for name in names:
            if name.endswith(".json"):
                (tmp_path / dirpath / name).write_bytes(garbage)
    again, err = _scan(tmp_path, "train.py")
    assert again == reference and "Traceback" not in err


def test_concurrent_runs_share_a_cache(tmp_path):
    _project(tmp_path)
    reference, _ = _scan(tmp_path, ".", "--no-cache", "-j", "1")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "pytest_maskloss", "scan", ".", "--output-format", "json", "--keras-version", "2.10", "-j", "1"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(3)]
    outs = [p.communicate() for p in procs]
    for out, err in outs:
        assert sorted(json.dumps(f, sort_keys=True) for f in json.loads(out)) == reference, err
    assert _scan(tmp_path, ".", "-j", "1")[0] == reference
