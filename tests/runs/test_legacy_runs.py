"""Runs written by version 0.1 (a flat SD-MTCNN graph) still load, evaluate and export."""

import json
import shutil

import numpy as np
import pytest
from conftest import REPO

FIXTURE = f"{REPO}/tests/fixtures/legacy_run_v0_1"


def _copied(fixture, tmp_path_factory):
    """A copy of a stored run directory, and the override that keeps its data cache beside it."""
    tmp = tmp_path_factory.mktemp("legacy")
    run = tmp / "run"
    shutil.copytree(fixture, run)
    return run, [f"data.scenes.cache_dir={tmp / 'cache'}"]


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory):
    return _copied(FIXTURE, tmp_path_factory)


def test_a_run_written_by_0_1_evaluates_to_its_own_figures(legacy_run):
    from keras_sdmtcnn.training.saving import load_model
    from keras_sdmtcnn.workflows.evaluate import evaluate

    run, overrides = legacy_run
    model = load_model(str(run / "model.keras"))
    # 0.1's SDMTCNN (network and trainer in one) loads as the trainer of an SDMTCNN network.
    assert type(model).__name__ == "MultiTaskTrainer" and model.method.kind == "self_distillation"
    assert model.tasks == ("semantic", "depth", "normal")
    results = evaluate(str(run), overrides=overrides, verbose=0)
    written = json.loads((run / "evaluation.json").read_text())
    with open(f"{FIXTURE}/evaluation.json") as f:
        before = json.load(f)
    assert set(before) <= set(results)
    for key, value in before.items():
        # 0.1 interpolated the median in a 0.01-degree histogram; it is now
        # numpy's median within 0.01 degree, so the two agree to 0.01 degree.
        atol = 0.01 if key.endswith("angle_median") else 1e-6
        np.testing.assert_allclose(results[key], value, rtol=1e-5, atol=atol, err_msg=key)
        assert written[key] == results[key]


# Opt-in (-m slow, 18 s): a 0.1 run still loads and evaluates above, and a legacy
# run's export stays in the default suite with 0.2's.
@pytest.mark.slow
def test_a_run_written_by_0_1_exports_its_student(legacy_run, tmp_path):
    from keras_sdmtcnn.deploy.runtime import load_exported
    from keras_sdmtcnn.workflows.export import export

    run, overrides = legacy_run
    folder = export(str(run), "student", "tflite", out_dir=str(tmp_path), overrides=overrides,
                    parity_samples=2, verbose=0)
    runtime = load_exported(f"{folder}/model.tflite")
    assert runtime.metadata["parity"]["max_abs_diff"]["depth"] < 1e-4
    assert set(runtime.metadata["tasks"]) == {"semantic", "depth", "normal"}


FIXTURE_0_2 = f"{REPO}/tests/fixtures/legacy_run_v0_2"


@pytest.fixture(scope="module")
def legacy_run_0_2(tmp_path_factory):
    return _copied(FIXTURE_0_2, tmp_path_factory)


@pytest.mark.parametrize("stage", ["", "stage1_teacher"])
def test_runs_written_by_0_2_evaluate_to_their_own_figures(legacy_run_0_2, stage):
    # A Baseline-3 run: its second stage (the network with a frozen Teacher,
    # 0.2's FrozenTeacherStudent) and its first (0.2's SDMTCNN trainer).
    from keras_sdmtcnn.training.saving import load_model
    from keras_sdmtcnn.workflows.evaluate import evaluate

    run, overrides = legacy_run_0_2
    folder = run / stage if stage else run
    model = load_model(str(folder / "model.keras"))
    assert model.method.kind == ("self_distillation" if stage else "two_stage")
    results = evaluate(str(folder), overrides=overrides, verbose=0)
    with open(f"{FIXTURE_0_2}/{stage + '/' if stage else ''}evaluation.json") as f:
        before = json.load(f)
    metrics = {k: v for k, v in before.items() if not k.endswith("loss")}
    assert metrics and set(metrics) <= set(results)
    for key, value in metrics.items():
        np.testing.assert_allclose(results[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_run_written_by_0_2_exports_its_student(legacy_run_0_2, tmp_path):
    from keras_sdmtcnn.deploy.parity import failures
    from keras_sdmtcnn.deploy.runtime import load_exported
    from keras_sdmtcnn.workflows.export import export

    run, overrides = legacy_run_0_2
    folder = export(str(run), "student", "tflite", out_dir=str(tmp_path), overrides=overrides,
                    parity_samples=2, verbose=0)
    runtime = load_exported(f"{folder}/model.tflite")
    assert failures(runtime.metadata["parity"]) == []
    assert set(runtime.metadata["tasks"]) == {"semantic", "depth", "normal"}
