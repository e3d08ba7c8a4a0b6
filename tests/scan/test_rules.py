"""Tests generated from every rule's VALID and INVALID examples (Fixit style)."""

import re
import textwrap

import pytest

from pytest_maskloss.scan.engine import check_source
from pytest_maskloss.scan.rules import ALL_RULES


def _version(example: str):
    m = re.search(r"^# keras-version: (\S+)", example, re.M)
    return m.group(1) if m else None


def _cases(kind):
    for rule in ALL_RULES:
        for i, example in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, textwrap.dedent(example), id=f"{rule.code}-{kind.lower()}-{i}")


@pytest.mark.parametrize("rule,example", list(_cases("INVALID")))
def test_invalid_example_produces_the_rule_code(rule, example):
    findings = check_source(example, _version(example))
    codes = [f.code for f in findings]
    assert rule.code in codes, f"{rule.code} not found; got {[(f.code, f.message) for f in findings]}"
    # and only that rule's code fires on it (other rules stay quiet on a focused example)
    assert set(codes) == {rule.code}, [(f.code, f.message) for f in findings]


@pytest.mark.parametrize("rule,example", list(_cases("VALID")))
def test_valid_example_does_not_produce_the_rule_code(rule, example):
    findings = check_source(example, _version(example))
    assert rule.code not in [f.code for f in findings], [(f.code, f.message) for f in findings]


def test_every_rule_has_examples_and_a_stable_code():
    codes = [r.code for r in ALL_RULES]
    assert len(codes) == len(set(codes))
    for rule in ALL_RULES:
        assert re.fullmatch(r"MSK\d{3}", rule.code)
        assert rule.VALID and rule.INVALID, rule.code
        assert rule.name and rule.summary
