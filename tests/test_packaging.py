"""What a user installs: one version, the scanner's parser only in the ``scan`` extra, and a
clear sentence (no traceback) when a scan is started without it. The release itself (build,
twine, a fresh venv with the wheel) is checked by ``.ci/release.sh``."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

# Run with libcst (and tomli) unimportable, as in an install without the scan extra.
WITHOUT_SCAN_EXTRA = "import sys; sys.modules['libcst'] = None; sys.modules['tomli'] = None\n"


def _run(code: str):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", WITHOUT_SCAN_EXTRA + code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pytest_maskloss.__version__"}
    init = (ROOT / "pytest_maskloss" / "__init__.py").read_text(encoding="utf-8")
    assert len(re.findall(r'^__version__ = "[^"]+"$', init, flags=re.M)) == 1


def test_metadata_a_registry_shows():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "Framework :: Pytest" in project["classifiers"]
    assert {"Homepage", "Documentation", "Repository", "Issues"} <= set(project["urls"])
    core = " ".join(project["dependencies"])
    assert "libcst" not in core and "tomli" not in core
    assert any(d.startswith("libcst") for d in project["optional-dependencies"]["scan"])


def test_the_runtime_parts_import_without_the_scanner_dependencies():
    r = _run("import pytest_maskloss, pytest_maskloss.plugin, pytest_maskloss.check.api, pytest_maskloss.reference\n"
             "assert sys.modules['libcst'] is None\nprint('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_maskloss_scan_without_libcst_says_what_to_install():
    r = _run("from pytest_maskloss.cli import main\nsys.exit(main(['scan', 'examples']))")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "maskloss scan needs libcst" in r.stderr and "pip install 'pytest-maskloss[scan]'" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run("from pytest_maskloss.cli import main\nsys.exit(main(['rule', 'MSK001']))")
    assert r.returncode == 2 and "maskloss rule needs libcst" in r.stderr and "Traceback" not in r.stderr


def test_the_flake8_plugin_without_libcst_says_what_to_install():
    r = _run("from pytest_maskloss.scan.flake8 import MasklossChecker\n"
             "try:\n    list(MasklossChecker(None, 'x.py', ['x = 1\\n']).run())\n"
             "except RuntimeError as e:\n    print(e)\n")
    assert "the flake8 plugin MSK needs libcst" in r.stdout, r.stderr[-2000:]


def test_the_scan_extra_and_the_hooks_list_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    for dep in project["optional-dependencies"]["scan"]:
        assert hooks.count(f'"{dep}"') == 2, dep  # both hooks


def test_readme_and_ci_run_the_same_test_command():
    line = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[tensorflow,jax,legacy,test,hub]' && .venv/bin/python -m pytest"
    assert line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
