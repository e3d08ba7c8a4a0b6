"""Tests generated from every rule's VALID and INVALID examples (Fixit style).

VALID: none of the rule's code. INVALID: exactly the rule's code; and its ``fixed`` source is
what the rule's fix makes of it (unsafe fixes included) when the rule offers one, and has none
of the rule's code either way.
"""

import re
import textwrap

import pytest

from pytest_maskloss.scan import fixer
from pytest_maskloss.scan.engine import check_source
from pytest_maskloss.scan.rules import ALL_RULES, Invalid
from pytest_maskloss.scan.rules.base import example_keras_version


def _cases(kind):
    for rule in ALL_RULES:
        for i, example in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, example, id=f"{rule.code}-{kind.lower()}-{i}")


def _codes(findings):
    return [(f.code, f.message) for f in findings]


@pytest.mark.parametrize("rule,example", list(_cases("INVALID")))
def test_invalid_example_produces_the_rule_code(rule, example):
    source = textwrap.dedent(example.code)
    findings = check_source(source, example_keras_version(source))
    codes = [f.code for f in findings]
    assert rule.code in codes, f"{rule.code} not found; got {_codes(findings)}"
    # and only that rule's code fires on it (other rules stay quiet on a focused example)
    assert set(codes) == {rule.code}, _codes(findings)


@pytest.mark.parametrize("rule,example", list(_cases("INVALID")))
def test_invalid_example_becomes_its_fixed_source(rule, example):
    source, fixed = textwrap.dedent(example.code), textwrap.dedent(example.fixed)
    assert fixed != source
    version = example_keras_version(source)
    fixes = [f for f in check_source(source, version) if f.code == rule.code and f.fix is not None]
    if fixes:  # the rule's own fix (unsafe ones allowed) must produce exactly `fixed`
        assert fixer.fixed_text(source, fixes) == fixed
    after = check_source(fixed, example_keras_version(fixed))
    assert rule.code not in [f.code for f in after], _codes(after)


@pytest.mark.parametrize("rule,example", list(_cases("VALID")))
def test_valid_example_does_not_produce_the_rule_code(rule, example):
    source = textwrap.dedent(example)
    findings = check_source(source, example_keras_version(source))
    assert rule.code not in [f.code for f in findings], _codes(findings)


def test_every_rule_has_examples_and_a_stable_code():
    codes = [r.code for r in ALL_RULES]
    assert len(codes) == len(set(codes))
    for rule in ALL_RULES:
        assert re.fullmatch(r"MSK\d{3}", rule.code)
        assert rule.VALID and rule.INVALID, rule.code
        assert all(isinstance(e, Invalid) for e in rule.INVALID), rule.code
        assert all(isinstance(e, str) for e in rule.VALID), rule.code
        assert rule.name and rule.summary


def test_every_fix_the_examples_get_is_checked():
    """At least the fixes the README promises are exercised by an example."""
    with_fix = set()
    for rule in ALL_RULES:
        for example in rule.INVALID:
            source = textwrap.dedent(example.code)
            if any(f.fix is not None for f in check_source(source, example_keras_version(source))):
                with_fix.add(rule.code)
    assert {"MSK001", "MSK002", "MSK005"} <= with_fix


def test_a_fix_that_cannot_be_built_is_dropped():
    from pytest_maskloss.scan.rules.base import make_fix

    def broken():
        raise ValueError("no position")

    assert make_fix("x", broken) is None
    fix = make_fix("y", lambda: [])
    assert fix is not None and fix.edits == () and fix.safe is False
