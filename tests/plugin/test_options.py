"""The plugin's options, ini settings and marker, and its weight. No Keras model is trained
here: the suites are trivial, run in-process (fast) except where import state is asserted."""

import json
import subprocess
import sys
import textwrap
from importlib.metadata import version

import pytest

# hypothesis' plugin imports hypothesis in its terminal summary: seconds per in-process run
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
HEAVY = ("tensorflow", "keras", "tf_keras", "jax", "torch", "numpy", "pytest_maskloss.plugin.audit",
         "pytest_maskloss.check.api", "pytest_maskloss.check.run", "pytest_maskloss.compat.model")


def test_importing_the_plugin_loads_nothing_heavy():
    code = "import sys, pytest_maskloss, pytest_maskloss.plugin; print([m for m in %r if m in sys.modules])" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_session_without_maskloss_loads_nothing_heavy(pytester):
    pytester.makepyfile(test_light=f"""
        import sys

        def test_nothing_heavy(pytestconfig):
            assert pytestconfig.pluginmanager.hasplugin("maskloss")  # the entry point is active
            assert not pytestconfig.pluginmanager.hasplugin("maskloss-audit")
            assert [m for m in {HEAVY!r} if m in sys.modules] == []
    """)
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1)
    assert "maskloss: auditing" not in result.stdout.str()


def test_an_auditing_session_imports_no_tensorflow_by_itself(pytester):
    pytester.makepyfile(test_light="""
        import sys

        def test_audit_on(pytestconfig):
            assert pytestconfig.pluginmanager.hasplugin("maskloss-audit")
            assert [m for m in ("tensorflow", "keras", "tf_keras", "jax") if m in sys.modules] == []
    """)
    result = pytester.runpytest_subprocess(*QUIET, "--maskloss", "--maskloss-report=r.json")
    result.assert_outcomes(passed=1)
    keras = version("keras")
    result.stdout.fnmatch_lines([f"maskloss: auditing Keras models (warn mode); Keras {keras} (* backend; not imported yet)*"])
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["findings"] == [] and data["totals"]["audited_calls"] == 0 and data["mode"] == "warn"
    result.stdout.fnmatch_lines(["maskloss (warn): 0 call(s) audited in 0 test(s); 0 finding(s) in 0 test(s); 0 call(s) not audited"])


def _suite(pytester, ini="", body="def test_one():\n    pass\n"):
    pytester.makeini("[pytest]\n" + textwrap.dedent(ini))
    pytester.makepyfile(test_one=body)


@pytest.mark.parametrize("ini, args, expected", [
    ("maskloss = strict", [], "strict mode"),
    ("maskloss = true", [], "warn mode"),
    ("maskloss = strict", ["--no-maskloss"], None),
    ("maskloss = false", ["--maskloss=strict"], "strict mode"),
    ("", ["--maskloss"], "warn mode"),
    ("", [], None),
])
def test_mode_from_ini_and_command_line(pytester, ini, args, expected):
    _suite(pytester, ini)
    result = pytester.runpytest(*QUIET, *args)
    result.assert_outcomes(passed=1)
    header = [l for l in result.outlines if l.startswith("maskloss: auditing")]
    if expected is None:
        assert header == [] and "maskloss audit" not in result.stdout.str()
    else:
        assert len(header) == 1 and f"({expected})" in header[0]


def test_bare_maskloss_before_a_path_keeps_the_path(pytester):
    pytester.makepyfile(**{"chosen/test_chosen.py": "def test_chosen():\n    pass\n",
                           "other/test_other.py": "def test_other():\n    assert False\n"})
    result = pytester.runpytest(*QUIET, "--maskloss", "chosen")
    result.assert_outcomes(passed=1)
    assert "(warn mode)" in result.stdout.str()


@pytest.mark.parametrize("ini, args, message", [
    ("", ["--maskloss=loud"], "--maskloss=loud: use --maskloss, --maskloss=warn or --maskloss=strict"),
    ("maskloss = sometimes", [], "ini option maskloss = 'sometimes': use true, false, warn or strict"),
    ("maskloss_pad_id = none", ["--maskloss"], "ini option maskloss_pad_id = 'none': expected a number"),
    ("maskloss_rtol = -1", ["--maskloss"], "ini option maskloss_rtol = '-1': expected a non-negative number"),
    ("maskloss_granularity = epoch", ["--maskloss"], "ini option maskloss_granularity = 'epoch': use batch or token"),
])
def test_bad_option_values_are_usage_errors(pytester, ini, args, message):
    _suite(pytester, ini)
    result = pytester.runpytest(*QUIET, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


@pytest.mark.parametrize("marker, message", [
    ("maskloss(pad=1)", "test_one.py::test_one: @pytest.mark.maskloss got unknown option(s) pad; known: pad_id, rtol, atol, granularity, pad_in, enabled"),
    ("maskloss(False)", "@pytest.mark.maskloss takes keyword options only"),
    ("maskloss(granularity='epoch')", "@pytest.mark.maskloss(granularity='epoch'): expected 'batch' or 'token'"),
    ("maskloss(enabled='no')", "@pytest.mark.maskloss(enabled='no'): expected True or False"),
    ("maskloss(pad_id='0')", "@pytest.mark.maskloss(pad_id='0'): expected a number"),
    ("maskloss(rtol=-0.1)", "@pytest.mark.maskloss(rtol=-0.1): expected a non-negative number or None"),
])
def test_bad_markers_are_usage_errors(pytester, marker, message):
    _suite(pytester, body=f"import pytest\n\n@pytest.mark.{marker}\ndef test_one():\n    pass\n")
    result = pytester.runpytest(*QUIET, "--strict-markers")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_a_valid_marker_is_registered_and_accepted(pytester):
    _suite(pytester, body="import pytest\n\n@pytest.mark.maskloss(pad_id=-1, rtol=1e-4, atol=0, "
                          "granularity='token', pad_in='labels', enabled=True)\ndef test_one():\n    pass\n")
    result = pytester.runpytest(*QUIET, "--strict-markers")
    result.assert_outcomes(passed=1)
    markers = pytester.runpytest(*QUIET, "--markers").stdout.str()
    assert "@pytest.mark.maskloss(pad_id=0, rtol=None, atol=None, granularity='batch', pad_in='auto', enabled=True)" in markers
