"""The rule pages of the documentation site (docs/rules/) are generated from the rules'
docstrings and must not drift."""

import pathlib
import shutil
import subprocess
import sys

import pytest

from pytest_maskloss.cli import main
from pytest_maskloss.scan import ruledocs
from pytest_maskloss.scan.rules import ALL_RULES

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES_DOCS = ROOT / "docs" / "rules"
REQUIRED = ("What it does", "Why is this bad?", "Example", "Use instead")


def test_rule_pages_match_the_docstrings():
    assert ruledocs.main(["--check", str(RULES_DOCS)]) == 0, (
        "docs/rules is out of date: python -m pytest_maskloss.scan.ruledocs --write docs/rules"
    )


def test_every_rule_has_a_page_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for rule in ALL_RULES:
        assert f"rules/{rule.code}.md" in nav, rule.code
    assert "rules/index.md" in nav


@pytest.fixture
def rules_copy(tmp_path):
    path = tmp_path / "rules"
    shutil.copytree(RULES_DOCS, path)
    return path


def test_check_fails_when_a_page_is_edited(rules_copy, capsys):
    page = rules_copy / "MSK001.md"
    text = page.read_text(encoding="utf-8")
    page.write_text(text.replace("0.9657 instead of 1.6094", "0.9 instead of 1.6", 1), encoding="utf-8")
    assert ruledocs.main(["--check", str(rules_copy)]) == 1
    assert "MSK001.md differ from the rules' docstrings" in capsys.readouterr().err
    assert ruledocs.main(["--write", str(rules_copy)]) == 0
    assert page.read_text(encoding="utf-8") == text
    assert ruledocs.main(["--check", str(rules_copy)]) == 0


def test_check_fails_on_a_missing_or_left_over_page(rules_copy):
    (rules_copy / "MSK002.md").unlink()
    assert ruledocs.main(["--check", str(rules_copy)]) == 1
    ruledocs.main(["--write", str(rules_copy)])
    (rules_copy / "MSK999.md").write_text("# a rule that no longer exists\n", encoding="utf-8")
    assert ruledocs.main(["--check", str(rules_copy)]) == 1
    ruledocs.main(["--write", str(rules_copy)])
    assert not (rules_copy / "MSK999.md").exists()
    assert ruledocs.main(["--check", str(rules_copy)]) == 0


def test_check_fails_when_a_docstring_changes(rules_copy, monkeypatch):
    cls = type(ALL_RULES[0])
    monkeypatch.setattr(cls, "__doc__", cls.__doc__.replace("0.9657", "0.97"))
    assert ruledocs.main(["--check", str(rules_copy)]) == 1


def test_pages_hold_the_docstring_sections_and_the_table_links_them():
    index = (RULES_DOCS / "index.md").read_text(encoding="utf-8")
    for rule in ALL_RULES:
        page = (RULES_DOCS / f"{rule.code}.md").read_text(encoding="utf-8")
        assert page.splitlines()[2] == f"# {rule.code} `{rule.name}`"
        for title in ruledocs.sections(rule):
            assert not title or f"\n## {title}\n" in page
        assert f"[{rule.code}]({rule.code}.md)" in index
    # a docstring's link to a section of the scanner page is pointed at that page
    assert "(../scanner.md#speed)" in (RULES_DOCS / "MSK900.md").read_text(encoding="utf-8")


def test_check_as_a_module_command(rules_copy):
    cmd = [sys.executable, "-m", "pytest_maskloss.scan.ruledocs", "--check", str(rules_copy)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    page = rules_copy / "MSK003.md"
    page.write_text(page.read_text(encoding="utf-8").replace("## Example", "## Examples", 1), encoding="utf-8")
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


def test_sarif_help_links_point_at_the_rule_pages():
    import json
    import re

    from pytest_maskloss.scan import output

    site = re.search(r"^site_url: (\S+)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.M).group(1)
    rules = json.loads(output.sarif([], "0"))["runs"][0]["tool"]["driver"]["rules"]
    assert len(rules) == len(ALL_RULES)
    for rule in rules:
        assert rule["helpUri"] == f"{site}rules/{rule['id']}/"  # mkdocs serves rules/X.md at rules/X/
        assert (RULES_DOCS / f"{rule['id']}.md").is_file()
