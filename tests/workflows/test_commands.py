"""End to end: the real command-line entry points on a tiny recipe."""

import json
import os

import numpy as np
import pytest
from conftest import REPO, run_command


def test_fit_writes_the_run_directory_and_learns(finished_run):
    _, run_dir, result = finished_run
    for name in ("recipe.yaml", "metrics.json", "history.csv", "model.keras",
                 "student.keras", "curves.png", "run.json",
                 "checkpoints/best.keras", "checkpoints/last.keras"):
        assert (run_dir / name).exists(), name
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "complete"
    assert status["intra_op_threads"] == 1  # a tiny step: one thread per op (automatic)
    # training.mixed_precision: auto keeps a tiny step in float32, and says so once.
    assert status["precision"] == "float32"
    assert result.stdout.count("float32 (auto: ") == 1, result.stdout[:2000]
    history = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    first, last = history[0], history[-1]
    assert last["val_loss"] < first["val_loss"]
    assert last["val_depth_teacher_abs_err"] < first["val_depth_teacher_abs_err"]
    assert last["val_semantic_teacher_pixel_acc"] > first["val_semantic_teacher_pixel_acc"]
    # TensorBoard: every term and metric per epoch, and prediction panels at epoch 5.
    import tensorflow as tf

    tags = set()
    for event_file in (run_dir / "tensorboard" / "validation").glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_semantic_student_miou", "epoch_depth_kd_loss", "epoch_loss"} <= tags
    assert list((run_dir / "tensorboard" / "panels").glob("events.*"))
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert "val_normal_student_angle_median" in header and "depth_kd_loss" in header
    # One readable line per epoch with both branches.
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(lines) == 5 and "semantic mIoU↑ T" in lines[-1] and "/ S" in lines[-1]


def test_evaluate_reproduces_the_last_epoch(finished_run):
    _, run_dir, _ = finished_run
    result = run_command("evaluate", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| Teacher |" in result.stdout and "| Student |" in result.stdout
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    last = json.loads((run_dir / "metrics.json").read_text())[-1]
    for key in ("depth_teacher_abs_err", "semantic_student_miou", "normal_teacher_angle_mean"):
        np.testing.assert_allclose(evaluation[key], last[f"val_{key}"], rtol=1e-5)
    table = (run_dir / "evaluation.md").read_text()
    assert "depth Abs ↓" in table and "semantic mIoU ↑" in table


def test_notebook_style_evaluate(finished_run):
    from keras_sdmtcnn.evaluate import load_run

    _, run_dir, _ = finished_run
    model, recipe, datasets = load_run(str(run_dir))
    results = model.evaluate(datasets["val"], return_dict=True, verbose=0)
    assert 0 <= results["semantic_teacher_miou"] <= 1
    assert model.student_model().count_params() < model.count_params()


def test_evaluate_mtan_convention_is_the_mean_of_per_batch_values(finished_run, tmp_path):
    from keras_sdmtcnn.workflows.evaluate import evaluate
    from keras_sdmtcnn.workflows.notebook import load_run

    _, run_dir, _ = finished_run
    overrides = ["evaluation.convention=mtan", "evaluation.batch_size=1"]
    results = evaluate(str(run_dir), None, overrides, out_dir=str(tmp_path), verbose=0)
    assert "Convention `mtan`" in (tmp_path / "evaluation.md").read_text()
    assert "batches of 1" in (tmp_path / "evaluation.md").read_text()
    # numpy, batch by batch over the same one-image batches (the split has 2)
    model, _, datasets = load_run(str(run_dir), overrides=overrides)
    abs_errs, medians = [], []
    for x, y in datasets["val"]:
        out = model(x, training=False)
        g, p = y["depth"].numpy(), out["depth_teacher"].numpy()
        abs_errs.append(np.abs(p - g)[g > 0].mean())
        gn = y["normal"].numpy().reshape(-1, 3).astype("float64")
        pn = out["normal_teacher"].numpy().reshape(-1, 3).astype("float64")
        keep = np.any(gn != 0, -1)
        gn, pn = gn[keep], pn[keep]
        norms = np.linalg.norm(gn, axis=-1) * np.linalg.norm(pn, axis=-1)
        cos = np.clip((gn * pn).sum(-1) / norms, -1, 1)
        medians.append(np.median(np.degrees(np.arccos(cos))))
    assert len(abs_errs) > 1
    np.testing.assert_allclose(results["depth_teacher_abs_err"], np.mean(abs_errs), rtol=1e-4)
    np.testing.assert_allclose(results["normal_teacher_angle_median"], np.mean(medians),
                               rtol=1e-4)


def test_commands_hide_tensorflow_native_logs_unless_verbose():
    import os
    import subprocess
    import sys

    from conftest import REPO

    def model_size(*extra):
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        return subprocess.run(
            [sys.executable, "-m", "keras_sdmtcnn.model_size", "--width-multiplier", "0.0625",
             *extra], cwd=REPO, env={**env, "PYTHONPATH": REPO}, capture_output=True,
            text=True, timeout=300)

    quiet = model_size()
    assert quiet.returncode == 0 and "full" in quiet.stdout
    assert quiet.stderr == "", quiet.stderr  # no oneDNN, CUDA or absl lines
    loud = model_size("--verbose")
    assert loud.returncode == 0 and "oneDNN" in loud.stderr


_ENDING = """
import atexit, sys, threading, time
from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError

out = sys.argv[1]
atexit.register(lambda: open(out + ".atexit", "w").write("ran"))

def main(argv):
    sys.stdout.write("last words, no newline")  # still in Python's buffer
    sys.stderr.write("to stderr ")
    if argv[0] == "thread":  # a non-daemon thread still working: the exit waits for it
        threading.Thread(target=lambda: (time.sleep(0.5),
                                         open(out + ".thread", "w").write("done"))).start()
    if argv[0] == "error":
        raise UserError("a bad input")

cli.run(main, sys.argv[2:])
raise SystemExit("cli.run returned")
"""


@pytest.mark.parametrize("how, code", [("ok", 0), ("error", 2), ("thread", 0)])
def test_a_command_ends_with_its_status_and_everything_written(how, code, tmp_path):
    """``cli.run`` skips the interpreter's teardown, and nothing written is lost."""
    import subprocess
    import sys

    script, out = tmp_path / "command.py", tmp_path / "out"
    script.write_text(_ENDING)
    done = subprocess.run([sys.executable, str(script), str(out), how], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stdout == "last words, no newline"
    expected_stderr = "to stderr error: a bad input\n" if how == "error" else "to stderr "
    assert done.stderr == expected_stderr
    assert (tmp_path / "out.atexit").read_text() == "ran"
    if how == "thread":
        assert (tmp_path / "out.thread").read_text() == "done"


def test_bad_recipe_key_is_one_clear_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("training:\n  epohcs: 3\n")
    result = run_command("fit", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Did you mean training.epochs?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_dataset_root_fails_cleanly_and_the_run_is_not_complete(tmp_path):
    recipe = tmp_path / "tk.yaml"
    recipe.write_text("data: {format: taskonomy, root: /nonexistent/taskonomy, "
                      "image_size: [32, 32]}\n")
    run_dir = tmp_path / "run"
    result = run_command("fit", str(recipe), "--run-dir", str(run_dir))
    assert result.returncode == 2
    assert "/nonexistent/taskonomy does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "model.keras").exists()


def test_png_with_corrupt_pixel_data_fails_cleanly(tmp_path):
    from fake_data import write_sample

    root = tmp_path / "tk"
    for point in range(2):
        write_sample(root, "b1", point)
    path = root / "depth_zbuffer" / "b1" / "point_1_view_0_domain_depth_zbuffer.png"
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    for i in range(idat + 6, len(data) - 16):  # pixel data; header and IEND intact
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    recipe = tmp_path / "tk.yaml"
    recipe.write_text(
        f"data: {{format: taskonomy, root: {root}, tasks: [depth], image_size: [16, 16],\n"
        "       train_split: [b1], val_split: [b1]}\n"
        "model: {width_multiplier: 0.0625, bottleneck_filters: 64}\n"
        "training: {epochs: 1, batch_size: 2}\n")
    run_dir = tmp_path / "run"
    result = run_command("fit", str(recipe), "--run-dir", str(run_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "probably corrupt" in result.stderr and str(root) in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_predict_scales_16_bit_images_instead_of_clipping(tmp_path):
    from PIL import Image

    from keras_sdmtcnn.workflows.predict import read_image

    values = np.array([[0, 257 * 100, 65535, 1000]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    said = []
    raw = read_image(str(path), (1, 4), said.append)
    assert raw.shape == (1, 4, 3) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[0, :, 0], [0, 100, 255, 4])  # 1000 / 257 = 3.9
    assert any("16-bit" in s for s in said)


def test_resuming_with_a_different_recipe_names_every_changed_key(tmp_path):
    import json as _json

    from keras_sdmtcnn.config import recipe_from_dict, recipe_to_dict
    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.runs.rundir import RunDir
    from keras_sdmtcnn.workflows.train import _resume_state, recipe_changes

    old = recipe_from_dict({"training": {"epochs": 10, "learning_rate": 0.001}})
    run = RunDir(tmp_path / "run")
    run.save_recipe(old)
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / "checkpoints" / "epoch-0001.keras").write_bytes(b"x")
    (tmp_path / "run" / "checkpoints" / "state.json").write_text(
        _json.dumps({"epoch": 1, "best": 1.0, "checkpoint": "epoch-0001.keras"}))
    new = recipe_from_dict({"training": {"epochs": 20, "learning_rate": 0.002},
                            "output": {"verbose": 0}, "speed": {"xla": True}})
    with pytest.raises(UserError) as caught:
        _resume_state(run, new, overwrite=False)
    message = str(caught.value)
    assert "training.epochs was 10, now 20" in message
    assert "training.learning_rate was 0.001, now 0.002" in message
    assert "output" not in message.split(":")[1] and "speed.xla" not in message
    assert "--overwrite" in message and "recipe.yaml" in message
    # The same recipe resumes; so does a recipe saved before sections existed.
    assert _resume_state(run, old, overwrite=False)["epoch"] == 1
    legacy = recipe_to_dict(old)
    del legacy["evaluation"], legacy["speed"], legacy["objective"]["feature_levels"]
    assert recipe_changes(legacy, recipe_to_dict(old)) == []


REPO_FIXTURE = f"{REPO}/tests/fixtures/legacy_run_v0_1"


def _nan_depth_fit(t):
    """A tiny NYUv2 layout whose one depth file holds NaN: fit must name it."""
    from fake_data import MTAN_SIZE, write_layout

    write_layout(str(t / "nyu"), "nyuv2", n_train=2, n_val=1)
    np.save(t / "nyu" / "train" / "depth" / "1.npy", np.full((*MTAN_SIZE, 1), np.nan, "float32"))
    (t / "nan.yaml").write_text(
        f"data: {{format: nyuv2, root: {t / 'nyu'}, tasks: [depth], "
        f"image_size: {list(MTAN_SIZE)}}}\n"
        "model: {width_multiplier: 0.0625, bottleneck_filters: 64}\n"
        "training: {epochs: 1, batch_size: 2}\noutput: {tensorboard: false}\n")
    return ["fit", str(t / "nan.yaml"), "--run-dir", str(t / "run")]


BAD_INPUTS = {
    "corrupt model file": lambda t: ["evaluate", str(t / "trunc.keras"), "--recipe",
                                     "recipes/synthetic.yaml"],
    "run directory is a file": lambda t: ["fit", "recipes/synthetic.yaml", "--run-dir",
                                          str(t / "a_file")],
    "export folder is a file": lambda t: ["export", "tests/fixtures/legacy_run_v0_1",
                                          "--branch", "student", "--format", "tflite",
                                          "--out", str(t / "a_file")],
    "unknown Delta_m convention": lambda t: ["experiments", "recipes/paper/synthetic/plan.yaml",
                                             "--delta-m", "nash"],
    "bad adaptor learning rate": lambda t: ["fit", "recipes/paper/synthetic/li_bilen.yaml",
                                            "--set", "objective.adaptor_learning_rate=0",
                                            "--run-dir", str(t / "run")],
    "unknown evaluation convention": lambda t: ["fit", "recipes/synthetic.yaml", "--set",
                                                "evaluation.convention=batch", "--run-dir",
                                                str(t / "run")],
    "missing dataset root": lambda t: ["data", "check", str(t / "nowhere"), "--format",
                                       "nyuv2"],
    "a data file holding NaN": _nan_depth_fit,
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_each_kind_of_bad_input_is_one_error_line(kind, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with open(f"{REPO_FIXTURE}/model.keras", "rb") as f:
        (tmp_path / "trunc.keras").write_bytes(f.read()[:4000])
    module, *args = BAD_INPUTS[kind](tmp_path)
    result = run_command(module, *args)
    assert result.returncode == 2, (kind, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")
              or ": error:" in line]
    assert len(errors) == 1, (kind, result.stderr[-2000:])
    if kind == "a data file holding NaN":
        assert errors[0].startswith(f"error: {tmp_path}/nyu/train/depth/1.npy: holds NaN or Inf.")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "model.keras").exists()
    assert (tmp_path / "a_file").read_text() == "not a folder"  # nothing replaced it


def test_a_missing_export_package_is_named_before_the_model_loads(tmp_path):
    import subprocess
    import sys

    shadow = tmp_path / "shadow" / "tf2onnx"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shadow'}:{REPO}"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_sdmtcnn.export", REPO_FIXTURE, "--branch", "student",
         "--format", "onnx", "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: tf2onnx is not installed: ONNX and LiteRT support is an optional extra; "
        'install it from the repository root with pip install -e ".[export]".']
    assert not (tmp_path / "out").exists()
