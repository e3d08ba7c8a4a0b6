"""The README rule reference is generated from the rules' docstrings and must not drift."""

import pathlib
import shutil
import subprocess
import sys

import pytest

from pytest_maskloss.cli import main
from pytest_maskloss.scan import ruledocs
from pytest_maskloss.scan.rules import ALL_RULES

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
REQUIRED = ("What it does", "Why is this bad?", "Example", "Use instead")


def test_readme_rule_reference_matches_the_docstrings():
    assert ruledocs.main(["--check", str(README)]) == 0, (
        "README.md's rule reference is out of date: python -m pytest_maskloss.scan.ruledocs --write README.md"
    )


def test_markers_sit_inside_the_scan_section():
    text = README.read_text(encoding="utf-8")
    assert text.index("<!-- scan:start -->") < text.index(ruledocs.START) < text.index(ruledocs.END) < text.index("<!-- scan:end -->")


@pytest.fixture
def readme_copy(tmp_path):
    path = tmp_path / "README.md"
    shutil.copy(README, path)
    return path


def test_check_fails_when_the_readme_section_is_edited(readme_copy, capsys):
    text = readme_copy.read_text(encoding="utf-8")
    readme_copy.write_text(text.replace("0.9657 instead of 1.6094", "0.9 instead of 1.6", 1), encoding="utf-8")
    assert ruledocs.main(["--check", str(readme_copy)]) == 1
    assert "differs from the rules' docstrings" in capsys.readouterr().err
    assert ruledocs.main(["--write", str(readme_copy)]) == 0
    assert readme_copy.read_text(encoding="utf-8") == text
    assert ruledocs.main(["--check", str(readme_copy)]) == 0


def test_check_fails_when_a_docstring_changes(readme_copy, monkeypatch):
    cls = type(ALL_RULES[0])
    monkeypatch.setattr(cls, "__doc__", cls.__doc__.replace("0.9657", "0.97"))
    assert ruledocs.main(["--check", str(readme_copy)]) == 1


def test_check_as_a_module_command(readme_copy):
    cmd = [sys.executable, "-m", "pytest_maskloss.scan.ruledocs", "--check", str(readme_copy)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    readme_copy.write_text(readme_copy.read_text(encoding="utf-8").replace("##### Example", "##### Examples", 1), encoding="utf-8")
    assert subprocess.run(cmd, capture_output=True).returncode == 1


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_every_rule_documents_itself_in_ruffs_sections(rule):
    parts = ruledocs.sections(rule)
    assert parts[""], "a lead sentence"
    for title in REQUIRED:
        assert parts.get(title), f"{rule.code}: ## {title}"
    assert set(parts) - {""} <= set(ruledocs.SECTIONS), set(parts)
    assert "Severity:" in parts["Why is this bad?"]
    has_fix = any(_offers_fix(rule, e) for e in rule.INVALID)
    assert ("Fix safety" in parts) == has_fix, rule.code


def _offers_fix(rule, example):
    import textwrap

    from pytest_maskloss.scan.engine import check_source
    from pytest_maskloss.scan.rules.base import example_keras_version

    source = textwrap.dedent(example.code)
    return any(f.fix is not None for f in check_source(source, example_keras_version(source)) if f.code == rule.code)


def test_versions_and_figures_are_stated():
    docs = {r.code: ruledocs.sections(r)["Why is this bad?"] for r in ALL_RULES}
    assert "0.9657 instead of 1.6094" in docs["MSK001"] and "2.11" in docs["MSK001"]
    assert "1.9392" in docs["MSK002"] and "every Keras version" in docs["MSK002"]
    assert "0.9657" in docs["MSK005"]


def test_maskloss_rule_prints_one_rule(capsys):
    assert main(["rule", "msk002"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# MSK002 `loss-subclass-overrides-call`") and "## Why is this bad?" in out
    assert main(["rule", "MSK999"]) == 2
    assert "unknown rule code" in capsys.readouterr().err
