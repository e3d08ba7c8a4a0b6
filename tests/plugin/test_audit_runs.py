"""``pytest --maskloss`` on a real mini suite (tests/plugin/minisuite.py) in a subprocess.

One warn run and one strict run are shared by the tests of this module (each run imports
TensorFlow and trains a dozen small models); heavier variants (no-audit comparison, xdist,
other stacks, the bundled example) are marked slow.

Expected figures come from the suite itself: each wrong test computes, with its own numpy
cross-entropy on the model's predictions, the figure Keras should report and the masked
reference, before making its call.
"""

import json
import math
import xml.etree.ElementTree as ET
from importlib.metadata import version

import numpy as np
import pytest

from minisuite import CLEAN, NO_RECORD, NOT_AUDITED, TWICE, WRONG, write_suite
from runner import run_pytest, summary_rows, totals_line

NODE = "test_mini.py::"


@pytest.fixture(scope="module")
def warn_run(tmp_path_factory):
    directory = write_suite(tmp_path_factory.mktemp("warn"))
    result = run_pytest(directory, "--maskloss", "--maskloss-report=out/report.json",
                        "--junitxml=out/junit.xml", "-rA")
    return result, directory / "out"


def expected(out, test):
    return json.loads((out / "expected" / f"{test}.json").read_text())


def report(out):
    return json.loads((out / "report.json").read_text())


# --- warn ----------------------------------------------------------------------------------


def test_warn_mode_keeps_every_outcome(warn_run):
    result, out = warn_run
    result.assert_outcomes(passed=17, failed=1)  # what the suite gives without the audit
    assert any(l.startswith("FAILED test_mini.py::test_fails_on_its_own") for l in result.outlines)
    assert "maskloss: auditing Keras models (warn mode); Keras " + version("keras") in result.stdout.str()


@pytest.mark.parametrize("test", ["test_padding_as_sample_weight", "test_conv1d_loses_the_mask",
                                  "test_loss_overrides_dunder_call", "test_marker_sets_token_granularity",
                                  "test_recompiled_model_is_judged_with_its_new_loss"])
def test_each_failure_mode_shows_in_the_summary_with_its_figures(warn_run, test):
    result, out = warn_run
    want = expected(out, test)
    (row,) = summary_rows(result)[NODE + test]
    assert row[1] == want["model"] and row[2].startswith(want["path"]) and row[3] == want["mode"]
    assert float(row[4]) == pytest.approx(want["reported"], rel=1e-5)
    assert float(row[5]) == pytest.approx(want["reference"], rel=1e-5)
    rel = (want["reported"] - want["reference"]) / want["reference"]
    assert float(row[6].rstrip("%")) == pytest.approx(100 * rel, abs=0.006)  # shown to 2 decimals
    (finding,) = [f for f in report(out)["findings"] if f["test"] == NODE + test]
    assert (finding["model"], finding["path"], finding["mode"]) == (want["model"], want["path"], want["mode"])
    assert finding["reported"] == pytest.approx(want["reported"], rel=1e-5)
    assert finding["reference"] == pytest.approx(want["reference"], rel=1e-5)
    assert finding["relative_error"] == pytest.approx(rel, rel=1e-4)
    assert finding["scope"].startswith("batch" if want["batch_scope"] else "epoch")


def test_a_later_call_of_the_same_model_is_judged_with_its_own_figures(warn_run):
    result, out = warn_run
    (test, (model, path, mode)), = TWICE.items()
    want = json.loads((out / "expected" / f"{test}.json").read_text())
    found = [f for f in report(out)["findings"] if f["test"] == NODE + test]
    assert [(f["model"], f["path"], f["mode"], f["call"]) for f in found] == [(model, path, mode, 1), (model, path, mode, 2)]
    for finding, call in zip(found, want):
        assert finding["reported"] == pytest.approx(call["reported"], rel=1e-5)
        assert finding["reference"] == pytest.approx(call["reference"], rel=1e-5)
    assert want[0]["reference"] != pytest.approx(want[1]["reference"], rel=1e-3)  # two different calls
    rows = summary_rows(result)[NODE + test]
    assert [r[2] for r in rows] == [path, f"{path} #2"]


def test_conv1d_finding_names_the_layer(warn_run):
    result, out = warn_run
    (finding,) = [f for f in report(out)["findings"] if f["test"] == NODE + "test_conv1d_loses_the_mask"]
    assert finding["detail"] == "layer 'conv' drops the mask"


def test_clean_models_have_no_finding_and_unmasked_models_cost_no_check(warn_run):
    result, out = warn_run
    data = report(out)
    audits = data["audits"]
    for test in CLEAN:
        mine = [a for a in audits if a["test"] == NODE + test]
        assert mine and all(a["status"] == "ok" and not a["findings"] for a in mine)
        assert NODE + test not in summary_rows(result)
    assert sorted(a["path"] for a in audits if a["test"] == NODE + CLEAN[0]) == sorted(
        ["fit", "evaluate", "train_on_batch", "test_on_batch"])
    # identity_lm calls fit twice: both calls audited, the second as call 2 (one tap: no retrace)
    assert sorted((a["path"], a["call"]) for a in audits if a["test"] == NODE + "test_identity_audited") == [
        ("evaluate", 1), ("fit", 1), ("fit", 2), ("train_on_batch", 1)]
    for test in NO_RECORD:  # no mask source, or opted out: no check ran, nothing recorded
        assert not [a for a in audits if a["test"] == NODE + test]
    assert set(summary_rows(result)) == {NODE + t for t in (*WRONG, *TWICE)}


def test_calls_that_cannot_be_audited_are_recorded_with_the_reason(warn_run):
    result, out = warn_run
    entries = report(out)["not_audited"]
    for test, (count, reason) in NOT_AUDITED.items():
        mine = [e for e in entries if e["test"] == NODE + test]
        assert len(mine) == count and all(e["reason"].startswith(reason) for e in mine), test
    assert len(entries) == sum(c for c, _ in NOT_AUDITED.values())
    text = result.stdout.str()
    assert "not audited (3x): no padding found — e.g. test_mini.py::test_unpadded_batches_are_tried_three_times" in text
    assert "one-shot generator" not in text and "custom loss" not in text  # both observed in place


def test_totals_line_and_json_totals(warn_run):
    result, out = warn_run
    totals = report(out)["totals"]
    modes = {}
    for mode in WRONG.values():
        modes[mode] = modes.get(mode, 0) + 1
    modes["padding-in-denominator"] += 2  # TWICE: two calls, two findings
    assert totals["by_mode"] == modes
    assert totals["findings"] == len(WRONG) + 2 and totals["tests_with_findings"] == len(WRONG) + 1
    # 7 wrong tests x 1 call, clean model 4 paths, identity model 4 calls (fit twice), a one-shot
    # generator's fit, a custom loss's evaluate, TWICE's two evaluates and the recompiled model's
    # second (clean) evaluate
    assert totals["audited_calls"] == len(WRONG) + 4 + 4 + 1 + 1 + 2 + 1
    assert totals["not_audited"] == 3
    line = totals_line(result)
    assert line == (f"maskloss (warn): 21 call(s) audited in 13 test(s); {len(WRONG) + 2} finding(s) in "
                    f"{len(WRONG) + 1} test(s) (epoch-weighted-by-sequences: 1, loss-ignores-mask: 1, mask-lost: 1, "
                    "padding-in-denominator: 7); 3 call(s) not audited")
    assert report(out)["mode"] == "warn" and report(out)["keras"].startswith("Keras " + version("keras"))


def test_each_finding_is_a_junit_property(warn_run):
    result, out = warn_run
    tree = ET.parse(out / "junit.xml")
    props = {}
    for case in tree.iter("testcase"):
        props[case.get("name")] = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    for test, mode in WRONG.items():
        values = [v for n, v in props[test] if n == "maskloss"]
        assert len(values) == 1 and f": {mode};" in values[0]
    want = expected(out, "test_padding_as_sample_weight")
    (value,) = [v for n, v in props["test_padding_as_sample_weight"] if n == "maskloss"]
    assert f"reported {want['reported']:.7g}, reference {want['reference']:.7g}" in value
    assert not [n for n, v in props["test_clean_masked_model_on_every_path"] if n.startswith("maskloss")]
    assert not [n for n, v in props["test_one_shot_generator"] if n.startswith("maskloss")]  # audited, right


def test_weights_and_losses_after_fit_are_those_of_an_unaudited_run(warn_run):
    result, out = warn_run
    audited = np.load(out / "state" / "audited.npz")
    plain = np.load(out / "state" / "not_audited.npz")  # same model and calls, opted out
    assert sorted(audited.files) == sorted(plain.files) and len(audited.files) > 6
    for key in audited.files:
        np.testing.assert_array_equal(audited[key], plain[key], err_msg=key)
    assert len(audited["losses"]) == 4 and np.all(np.isfinite(audited["losses"]))
    printed = [l for l in result.outlines if l.startswith("losses [")]
    assert len(printed) == 3 and printed[1] == printed[2]  # sample-weight test, then the pair


def test_wrappers_exist_during_the_session_only(warn_run):
    result, out = warn_run
    assert json.loads((out / "during_session.json").read_text()) is True
    after = json.loads((out / "after_session.json").read_text())
    assert after == {"keras": {"wrapped": [], "own": []}}  # Keras 3 Model defines none itself


def test_a_test_that_patches_model_fit_still_works(warn_run):
    result, out = warn_run
    assert json.loads((out / "spy_calls.json").read_text()) == [4]  # the audit's calls bypass it
    assert NODE + "test_spy_on_model_fit" in summary_rows(result)
    assert any(l.startswith("PASSED test_mini.py::test_spy_on_model_fit") for l in result.outlines)


# --- strict --------------------------------------------------------------------------------

STRICT_SELECTION = "sample_weight or conv1d or clean or swallows or opted_out or without_mask_source"


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory):
    # a project pad id: the model without a mask source is audited too
    directory = write_suite(tmp_path_factory.mktemp("strict"), ini="[pytest]\nmaskloss = strict\nmaskloss_pad_id = 0\n")
    return run_pytest(directory, "-k", STRICT_SELECTION)


def test_strict_fails_the_test_that_made_the_call(strict_run):
    result = strict_run
    result.assert_outcomes(passed=2, failed=4)  # the clean and the opted-out test pass
    text = result.stdout.str()
    for test, mode in [("test_padding_as_sample_weight", "padding-in-denominator"),
                       ("test_conv1d_loses_the_mask", "mask-lost")]:
        assert any(l.startswith(f"FAILED test_mini.py::{test} - ") for l in result.outlines), test
        assert f"({mode})" in text
    raised = [l for l in result.outlines if l.startswith("E   ") and "MaskLossMismatch: maskloss (--maskloss=strict)" in l]
    assert len(raised) == 3
    # with maskloss_pad_id set, the unmasked model is audited: it scores the padding
    assert "model 'plain_lm', fit() in this test" in text
    assert "no mask reaches the loss: the model has no mask source and no zero sample_weight" in text
    # the traceback ends at the test's own call, not inside the wrapper
    assert ">       history = model.fit(x, x, sample_weight=w, batch_size=4, verbose=0)" in text
    assert "def wrapper(" not in text
    assert "fit reports a loss that is not the masked reference: padding is counted in the denominator" in text
    assert "layer 'conv' drops the mask" in text


def test_strict_fails_a_test_that_swallowed_the_mismatch(strict_run):
    result = strict_run
    assert any(l.startswith("FAILED test_mini.py::test_swallows_exceptions") for l in strict_run.outlines)
    assert "the test swallowed the MaskLossMismatch raised by its call" in result.stdout.str()
    assert totals_line(result).startswith("maskloss (strict): ")


# --- slow: the same suite without the audit, under xdist, on the other stacks, the example ----


@pytest.mark.slow
def test_outcomes_printed_losses_and_weights_are_those_of_a_run_without_maskloss(warn_run, tmp_path):
    audited, audited_out = warn_run
    directory = write_suite(tmp_path)
    plain = run_pytest(directory, "-rA")
    plain.assert_outcomes(passed=17, failed=1)
    assert "maskloss audit" not in plain.stdout.str() and "maskloss: auditing" not in plain.stdout.str()

    def printed(result):
        return [l for l in result.outlines if l.startswith(("losses ", "evaluate ", "test_on_batch "))]

    assert printed(plain) == printed(audited) and len(printed(plain)) == 9
    for name in ("audited", "not_audited"):
        a = np.load(audited_out / "state" / f"{name}.npz")
        b = np.load(directory / "out" / "state" / f"{name}.npz")
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    warnings = [l for l in plain.outlines if "UserWarning" in l]
    assert warnings == [l for l in audited.outlines if "UserWarning" in l]
    assert json.loads((directory / "out" / "during_session.json").read_text()) is False


@pytest.mark.slow
def test_xdist_workers_findings_are_merged_into_one_summary(tmp_path):
    pytest.importorskip("xdist")
    directory = write_suite(tmp_path)
    # Keras imported at collection: the wrappers are installed before the first test
    result = run_pytest(directory, "-n", "2", "--maskloss", "--maskloss-report=out/report.json",
                        env={"MINI_IMPORT": "collection"})
    result.assert_outcomes(passed=17, failed=1)
    rows = summary_rows(result)
    assert set(rows) == {NODE + t for t in (*WRONG, *TWICE)}
    for test, mode in WRONG.items():
        assert [r[3] for r in rows[NODE + test]] == [mode]
    data = json.loads((directory / "out" / "report.json").read_text())
    assert data["totals"]["findings"] == len(WRONG) + 2 and data["totals"]["audited_calls"] == len(WRONG) + 13
    workers = [l for l in result.outlines if "maskloss: auditing Keras models" in l]
    assert len(workers) == 1  # one header, from the controller
    assert totals_line(result).startswith(f"maskloss (warn): 21 call(s) audited in 13 test(s); {len(WRONG) + 2} finding(s)")


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["tf_keras", "jax"])
def test_failure_modes_on_the_other_stacks(tmp_path, stack):
    env = {"TF_USE_LEGACY_KERAS": "1"} if stack == "tf_keras" else {"KERAS_BACKEND": "jax"}
    if stack == "tf_keras":
        pytest.importorskip("tf_keras")
    else:
        pytest.importorskip("jax")
    directory = write_suite(tmp_path)
    result = run_pytest(directory, "--maskloss", "--maskloss-report=out/report.json", "-k",
                        "sample_weight or conv1d or dunder or clean or identity", env=env)
    result.assert_outcomes(passed=6)
    rows = summary_rows(result)
    for test in ("test_padding_as_sample_weight", "test_conv1d_loses_the_mask", "test_loss_overrides_dunder_call"):
        want = expected(directory / "out", test)
        (row,) = rows[NODE + test]
        assert row[3] == want["mode"], test
        assert float(row[4]) == pytest.approx(want["reported"], rel=1e-5)
        assert float(row[5]) == pytest.approx(want["reference"], rel=1e-5)
    assert set(rows) == {NODE + t for t in ("test_padding_as_sample_weight", "test_conv1d_loses_the_mask",
                                            "test_loss_overrides_dunder_call")}
    label = json.loads((directory / "out" / "report.json").read_text())["findings"][0]["keras"]
    if stack == "tf_keras":
        assert label.startswith("tf_keras ")
    else:
        assert label.startswith("Keras 3") and label.endswith("(jax backend)")
    audited = np.load(directory / "out" / "state" / "audited.npz")
    plain = np.load(directory / "out" / "state" / "not_audited.npz")
    for key in audited.files:
        np.testing.assert_array_equal(audited[key], plain[key], err_msg=key)
    after = json.loads((directory / "out" / "after_session.json").read_text())
    flavour = "tf_keras" if stack == "tf_keras" else "keras"
    assert after[flavour]["wrapped"] == []
    if stack == "tf_keras":  # tf_keras.Model defines the four methods itself: they are back
        assert after["tf_keras"]["own"] == ["evaluate", "fit", "test_on_batch", "train_on_batch"]


@pytest.mark.slow
def test_bundled_example_prints_the_findings_table(tmp_path):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "examples" / "lm_suite").is_dir():
        pytest.skip("examples/lm_suite not present")
    result = run_pytest(root, "--maskloss", "examples/lm_suite", env={"MINI_OUT": str(tmp_path)})
    rows = summary_rows(result)
    conv = rows["examples/lm_suite/test_training.py::test_conv_language_model_learns"]
    assert sorted((r[2], r[3]) for r in conv) == [("evaluate", "mask-lost"), ("fit", "mask-lost")]
    assert "examples/lm_suite/test_training.py::test_lstm_language_model_learns" not in rows
    # fit's accuracy is judged too (observed in place): Keras 3 gives metrics= no sample weights
    assert [r[3] for r in rows["examples/lm_suite/test_language_model.py::test_sample_weight_padding"]] == [
        "padding-in-denominator", "metric-counts-padding"]


XLA_TEST = '''
import helpers as h


def test_xla_several_steps_per_execution():
    x = h.padded()
    w = (x != 0).astype("float32")
    model = h.lm(mask_zero=False, name="xla_lm")
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True, steps_per_execution=2)
    l = h.token_losses(model, x)
    # two batches of two sequences in one execution: Keras's figure divides by every token;
    # the reference is the mean of the two batches' token means
    halves = [(l[i:i + 2] * w[i:i + 2]).sum() / w[i:i + 2].sum() for i in (0, 2)]
    h.expect("xla", "xla_lm", "evaluate", "padding-in-denominator", (l * w).sum() / w.size,
             sum(halves) / 2)
    model.evaluate(x, x, sample_weight=w, batch_size=2, verbose=0)
'''


def test_an_xla_step_running_several_steps_per_execution_is_audited_step_by_step(tmp_path):
    """Keras 3 on TensorFlow: ``jit_compile=True`` with ``steps_per_execution=2`` (a GPU's
    default XLA plus a common speed setting) is audited with both steps' figures."""
    import keras

    if not keras.__version__.startswith("3") or keras.config.backend() != "tensorflow":
        pytest.skip("Keras 3 on TensorFlow reads an XLA step's logs step by step")
    directory = write_suite(tmp_path)
    (directory / "test_mini.py").write_text(XLA_TEST)
    result = run_pytest(directory, "--maskloss", "--maskloss-report=out/report.json")
    result.assert_outcomes(passed=1)
    data = report(directory / "out")
    assert not data["not_audited"]
    (finding,) = data["findings"]
    want = expected(directory / "out", "xla")
    assert (finding["model"], finding["path"], finding["mode"]) == ("xla_lm", "evaluate", want["mode"])
    assert finding["scope"].startswith("epoch")
    assert finding["reported"] == pytest.approx(want["reported"], rel=1e-5)
    assert finding["reference"] == pytest.approx(want["reference"], rel=1e-5)
