"""The command line: exit codes, formats, config, suppression, discovery, cross-module links."""

import json
import os
import subprocess
import sys

import pytest

from tests.scan.conftest import write

MASKED = """
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", "sparse_categorical_crossentropy")
"""


def test_json_contract_and_exit_1(project, run_json):
    code, data, _ = run_json(".")
    assert code == 1
    assert isinstance(data, list) and data
    for item in data:
        assert {"path", "line", "col", "code", "message"} <= set(item)
    assert ("train.py", 6, 23, "MSK001") in {(d["path"], d["line"], d["col"], d["code"]) for d in data}


def test_text_format_and_summary(project, run):
    code, out, _ = run("train.py")
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("train.py:6:23: MSK001")
    assert "error:" in first
    assert out.splitlines()[-1].startswith("Found 1 finding")


def test_clean_exit_0(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", "import os\nprint(os.getcwd())\n")
    code, out, _ = run(".")
    assert code == 0
    assert "All checks passed" in out


def test_model_in_models_py_found_when_only_models_py_is_scanned(project, run_json):
    code, data, _ = run_json("models.py")
    assert code == 1
    assert [(d["path"], d["code"]) for d in data] == [("train.py", "MSK001")]
    assert data[0]["related"] == ["models.py"]


def test_model_in_models_py_found_when_only_train_py_is_scanned(project, run_json):
    code, data, _ = run_json("train.py")
    assert code == 1
    assert [(d["path"], d["code"]) for d in data] == [("train.py", "MSK001")]
    assert "models.py:8" in data[0]["message"]


def test_package_layout_and_relative_imports(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.maskloss]\nkeras-version = '2.10'\n")
    write(tmp_path / "src/pkg/__init__.py", "")
    write(tmp_path / "src/pkg/nets.py", """
        import keras
        def lm():
            return keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
    """)
    write(tmp_path / "src/pkg/train.py", """
        from . import nets
        model = nets.lm()
        model.compile(loss="sparse_categorical_crossentropy")
    """)
    write(tmp_path / "scripts/run.py", """
        from pkg.nets import lm as make
        m = make()
        m.compile(loss="categorical_crossentropy")
    """)
    code, data, _ = run_json("src/pkg/nets.py")
    assert code == 1
    assert {d["path"] for d in data} == {os.path.join("src", "pkg", "train.py"), os.path.join("scripts", "run.py")}


def test_noqa_codes_bare_and_file_level(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = MASKED.strip().splitlines()
    write(tmp_path / "a.py", "\n".join(base[:-1] + [base[-1] + "  # noqa: MSK001"]) + "\n")
    write(tmp_path / "b.py", "\n".join(base[:-1] + [base[-1] + "  # noqa"]) + "\n")
    write(tmp_path / "c.py", "# maskloss: noqa\n" + MASKED)
    write(tmp_path / "d.py", "\n".join(base[:-1] + [base[-1] + "  # noqa: MSK004"]) + "\n")
    code, data, _ = run_json(".")
    assert [d["path"] for d in data] == ["d.py"]


def test_config_select_ignore_per_file_ignores(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", MASKED)
    write(tmp_path / "tests/t.py", MASKED)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.maskloss]\nkeras-version = "2.10"\nselect = ["ALL"]\n'
        '[tool.maskloss.per-file-ignores]\n"tests/*" = ["MSK0"]\n'
    )
    code, data, _ = run_json(".")
    assert [d["path"] for d in data] == ["a.py"]
    assert data[0]["severity"] == "error"
    code, data, _ = run_json(".", "--ignore", "MSK001")
    assert code == 0 and data == []
    code, data, _ = run_json(".", "--select", "MSK006")
    assert code == 0 and data == []


@pytest.mark.parametrize(
    "toml,needle",
    [
        ('[tool.maskloss]\nselct = ["ALL"]\n', "unknown key"),
        ('[tool.maskloss]\nselect = ["MSK999"]\n', "unknown rule code"),
        ('[tool.maskloss]\nignore = ["E501"]\n', "unknown rule code"),
        ('[tool.maskloss]\nkeras-version = "banana"\n', "keras-version"),
        ('[tool.maskloss]\nexclude = 3\n', "exclude"),
        ('[tool.maskloss\n', "invalid TOML"),
    ],
)
def test_config_errors_exit_2(tmp_path, run, monkeypatch, toml, needle):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", MASKED)
    (tmp_path / "pyproject.toml").write_text(toml)
    code, out, err = run(".", "--config", "pyproject.toml")
    assert code == 2
    assert needle in err


def test_usage_errors_exit_2(run):
    assert run("--output-format", "xml")[0] == 2
    assert run("--select", "NOPE", ".")[0] == 2
    assert run("/no/such/path/anywhere")[0] == 2


def test_keras_version_from_pins(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    write(tmp_path / "a.py", MASKED)
    (tmp_path / "requirements.txt").write_text("numpy\ntensorflow<2.11\n")
    code, data, _ = run_json("a.py")
    assert data[0]["severity"] == "error" and "requirements.txt: tensorflow<2.11" in data[0]["message"]
    (tmp_path / "requirements.txt").write_text("keras>=3.7\n")
    code, data, _ = run_json("a.py")
    assert code == 0 and data[0]["severity"] == "note"


def test_notes_do_not_fail(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", MASKED)
    code, out, _ = run("a.py", "--keras-version", "3.8")
    assert code == 0 and "MSK001" in out and "note:" in out


def test_gitignore_venv_and_excludes(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("generated/\n*.tmp.py\n!keep.tmp.py\n")
    for rel in ["a.py", "generated/g.py", "x.tmp.py", "keep.tmp.py", "venv2/lib/v.py", "build/b.py",
                "node_modules/n.py", "sub/skipme/s.py", "sub/ok.py"]:
        write(tmp_path / rel, MASKED)
    (tmp_path / "venv2/pyvenv.cfg").write_text("home = /usr\n")
    code, data, _ = run_json(".", "--exclude", "sub/skipme", "--keras-version", "2.10")
    assert sorted({d["path"] for d in data}) == ["a.py", "keep.tmp.py", os.path.join("sub", "ok.py")]
    # explicit paths are scanned unless --force-exclude
    code, data, _ = run_json("generated/g.py", "--keras-version", "2.10")
    assert len(data) == 1
    code, data, _ = run_json("generated/g.py", "sub/skipme/s.py", "--exclude", "sub/skipme", "--force-exclude", "--keras-version", "2.10")
    assert data == []


def test_sarif_and_github(project, run, capsys):
    code, out, _ = run("--output-format", "sarif", ".")
    doc = json.loads(out)
    assert doc["version"] == "2.1.0"
    run_ = doc["runs"][0]
    assert run_["tool"]["driver"]["name"] == "maskloss"
    assert {r["id"] for r in run_["tool"]["driver"]["rules"]} >= {"MSK001", "MSK900"}
    res = run_["results"][0]
    assert res["level"] == "error" and res["ruleId"] == "MSK001"
    assert res["locations"][0]["physicalLocation"]["region"]["startLine"] == 6
    code, out, _ = run("--output-format", "github", ".")
    assert out.startswith("::error file=train.py,line=6,col=23")


def test_statistics(project, run):
    code, out, _ = run("--statistics", ".")
    assert "MSK001" in out and "stock-loss-on-masked-output" in out


def test_parse_error_is_reported_and_scan_goes_on(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad.py", "def f(:\n    model.compile(loss='mse')\n")
    write(tmp_path / "good.py", MASKED)
    # a file the prefilter rules out is never parsed, so its syntax is not checked
    write(tmp_path / "unrelated_bad.py", "def g(:\n    pass\n")
    code, data, _ = run_json(".", "--keras-version", "2.10")
    assert code == 1
    assert {(d["path"], d["code"]) for d in data} == {("bad.py", "MSK900"), ("good.py", "MSK001")}
    bad = next(d for d in data if d["code"] == "MSK900")
    assert (bad["line"], bad["col"]) == (1, 7) and "syntax error" in bad["message"]


def test_parallel_jobs_same_result(project, run_json):
    a = run_json(".", "-j", "1")[1]
    b = run_json(".", "-j", "2")[1]
    assert a == b


def test_module_entry_point_subprocess_and_no_heavy_imports(project):
    out = subprocess.run(
        [sys.executable, "-m", "pytest_maskloss", "scan", ".", "--output-format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)
    probe = (
        "import sys; from pytest_maskloss.cli import main; import pytest_maskloss.scan.engine, "
        "pytest_maskloss.scan.flake8; main(['scan', '.', '-q']); "
        "bad = [m for m in ('tensorflow', 'keras', 'numpy', 'tf_keras', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_flake8_plugin_reports_errors_of_its_file(project):
    from pytest_maskloss.scan.flake8 import MasklossChecker

    results = list(MasklossChecker(None, str(project / "train.py")).run())
    assert [(line, col) for line, col, _, _ in results] == [(6, 22)]
    assert results[0][2].startswith("MSK001 error:")
    assert list(MasklossChecker(None, str(project / "models.py")).run()) == []  # finding is in train.py
    assert list(MasklossChecker(None, "stdin", lines=["import keras\n"]).run()) == []


def test_pre_commit_hooks_file():
    import pathlib

    text = (pathlib.Path(__file__).parents[2] / ".pre-commit-hooks.yaml").read_text()
    assert "- id: maskloss\n" in text and "- id: maskloss-fix\n" in text
    assert "entry: maskloss scan --fix" in text


def test_cyclic_gc_is_off_during_a_scan_and_restored_after(project, run, monkeypatch):
    import gc

    from pytest_maskloss.scan import engine

    seen = []
    real = engine.Scanner.scan_file

    def spy(self, path, quick=False):
        seen.append(gc.isenabled())
        return real(self, path, quick)

    monkeypatch.setattr(engine.Scanner, "scan_file", spy)
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    code, _, _ = run("models.py", "train.py", "--no-cache")
    assert code == 1 and seen and not any(seen)
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # only the maskloss process itself freezes (it exits)
    gc.disable()
    try:
        run("models.py", "--no-cache")
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_the_program_freezes_what_the_scan_built_before_it_exits(project):
    code = (
        "import gc, sys\n"
        "from pytest_maskloss.cli import main\n"
        "sys.argv = ['maskloss', 'scan', 'models.py', 'train.py', '--no-cache', '-q']\n"
        "code = main()\n"
        "print('frozen', gc.get_freeze_count() > 0, gc.isenabled(), code)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=project)
    assert out.stdout.strip().splitlines()[-1] == "frozen True True 1", out.stderr


def test_jobs_auto_uses_every_cpu_whatever_the_load(monkeypatch):
    from pytest_maskloss.scan import cli as scan_cli

    monkeypatch.setattr(scan_cli, "_cpus", lambda: 4)
    monkeypatch.setattr(scan_cli.os, "getloadavg", lambda: (12.0, 12.0, 12.0))
    assert scan_cli.workers(0) == 4
    assert scan_cli.workers(3) == 3
    assert scan_cli.workers(1) == 1
