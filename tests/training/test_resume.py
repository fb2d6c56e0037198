"""Resuming after a crash (bitwise), and NaN or Inf losses that stop a run."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_command


def _python(code, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3",
                               **(env or {})})


RESUME_RECIPE = """
data:
  format: scenes
  tasks: [semantic, depth]
  image_size: [32, 32]
  scenes: {{num_train: 24, num_val: 4, height: 32, width: 32, seed: 9, cache_dir: {cache}}}
# One conv a block, no attention: what is tested is resuming, not the architecture,
# and half the layers trace in half the time.
model: {{width_multiplier: 0.0625, bottleneck_filters: 64, student_filters: [64, 64, 64, 64],
        encoder_depths: [1, 1, 1, 1], attention: false}}
training: {{epochs: 4, batch_size: 4, learning_rate: 0.003, deterministic: true}}
output: {{tensorboard: false}}
"""


def _final_weights(run_dir):

    from keras_sdmtcnn.training.saving import load_model

    return load_model(os.path.join(run_dir, "model.keras")).get_weights()


KILL_SCRIPT = r"""
import os, signal, sys
from keras_sdmtcnn import cli, fit, io
from keras_sdmtcnn.runs import rundir
from keras_sdmtcnn.training import callbacks

mode, at = sys.argv[1], int(sys.argv[2])
if mode == "checkpoint":  # killed with epoch `at`'s checkpoint half written
    original_save = rundir.atomic_save_model

    def save(model, path):
        if os.path.basename(path) == f"epoch-{at:04d}.keras":
            with io.atomic_path(path, suffix=".keras") as tmp:
                model.save(tmp)
                os.kill(os.getpid(), signal.SIGKILL)
        return original_save(model, path)

    rundir.atomic_save_model = save
else:  # killed after `at` train steps of this process
    steps = [0]
    original_batch_end = callbacks.RunRecorder.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        steps[0] += 1
        if steps[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_batch_end(self, batch, logs)

    callbacks.RunRecorder.on_train_batch_end = on_train_batch_end
cli.run(fit.main_in_this_process, sys.argv[3:])
"""


def test_a_run_killed_while_checkpointing_resumes_to_bitwise_the_same_weights(tmp_path):
    # Killed from inside the run while epoch 2's checkpoint is being written
    # (a kill in the middle of an epoch: the Baseline-3 test below and
    # tests/workflows/test_multi_worker.py). Deterministic ops: the resumed
    # run must end with exactly the weights of an uninterrupted one, and no
    # temporary file.
    recipe = tmp_path / "resume.yaml"
    recipe.write_text(RESUME_RECIPE.format(cache=tmp_path / "cache"))
    straight = tmp_path / "straight"
    result = run_command("fit", str(recipe), "--run-dir", str(straight))
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    state = killed / "checkpoints" / "state.json"
    fit_args = [str(recipe), "--run-dir", str(killed)]
    first = _python(KILL_SCRIPT, "checkpoint", "2", *fit_args)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert json.loads(state.read_text())["epoch"] == 1  # epoch 2's save never completed
    assert any(".tmp" in name for name in os.listdir(killed / "checkpoints"))
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    assert not (killed / "model.keras").exists()

    result = run_command("fit", *fit_args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after epoch 1" in result.stdout
    history = json.loads((killed / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for a, b in zip(_final_weights(straight), _final_weights(killed)):
        np.testing.assert_array_equal(a, b)
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(killed) for f in files
                 if ".tmp" in f]
    assert not leftovers, leftovers


# Opt-in (-m slow, 36 s): bitwise resumption stays in the default suite
# (killed while checkpointing, above), and Baseline-3's two stages train in
# tests/workflows/test_experiments.py.
@pytest.mark.slow
def test_a_killed_baseline3_second_stage_resumes_to_bitwise_the_same_weights(tmp_path):
    # Baseline-3 trains the Teacher (stage 1), then a Student network with it
    # frozen (stage 2). Killed in the middle of stage 2's second epoch, the
    # run resumes with the optimizer state of the checkpoint (Adam's moments
    # of the Student's variables alone) and ends as an uninterrupted run.
    recipe = tmp_path / "b3.yaml"
    recipe.write_text(RESUME_RECIPE.format(cache=tmp_path / "cache").replace(
        "epochs: 4", "epochs: 2")
        + "objective: {stage1_network: train}\n")
    straight = tmp_path / "straight"
    result = run_command("fit", str(recipe), "--run-dir", str(straight))
    assert result.returncode == 0, result.stderr[-3000:]
    killed = tmp_path / "killed"
    fit_args = [str(recipe), "--run-dir", str(killed)]
    first = _python(KILL_SCRIPT, "step", str(2 * 6 + 9), *fit_args)  # 6 steps an epoch
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert json.loads((killed / "stage1_teacher" / "run.json").read_text())["status"] == (
        "complete")
    assert json.loads((killed / "checkpoints" / "state.json").read_text())["epoch"] == 1
    result = run_command("fit", *fit_args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after epoch 1" in result.stdout and "(finished earlier)" in result.stdout
    assert "Skipping variable loading for optimizer" not in result.stderr
    for a, b in zip(_final_weights(straight), _final_weights(killed)):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_naming_the_term_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from fake_data import MTAN_SIZE, tiny_nyuv2_recipe, write_layout

    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.training import callbacks
    from keras_sdmtcnn.training.saving import load_model
    from keras_sdmtcnn.workflows.train import fit

    H, W = MTAN_SIZE

    root = str(tmp_path / "nyu")
    write_layout(root, "nyuv2", n_train=4, n_val=2)
    original = callbacks.RunRecorder.on_epoch_end

    def poison_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:  # after epoch 1's checkpoint, the normal head turns NaN
            # (not the data: a NaN file is stopped as it is read, naming the file)
            head = self.model.get_layer("normal_teacher_conv")
            head.kernel.assign(np.full(head.kernel.shape, np.nan, "float32"))

    monkeypatch.setattr(callbacks.RunRecorder, "on_epoch_end", poison_after_first_epoch)
    recipe = tiny_nyuv2_recipe(root, ["semantic", "depth", "normal"], epochs=3)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"the loss term 'normal_\w+_loss' became NaN") as caught:
        fit(recipe, str(run_dir))
    # It names a checkpoint that exists, and says how to go on.
    named = re.search(r"is (\S+\.keras);", str(caught.value)).group(1)
    assert os.path.isfile(named) and "resumes from it" in str(caught.value)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    # The NaN epoch (2) is neither saved nor recorded.
    saved = json.loads((run_dir / "checkpoints" / "state.json").read_text())["epoch"]
    assert saved == 1
    assert len(json.loads((run_dir / "metrics.json").read_text())) == saved
    model = load_model(run_dir / "checkpoints" / "last.keras")
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_an_inf_loss_from_the_first_step_stops_without_a_checkpoint(tmp_path):
    from fake_data import MTAN_SIZE, tiny_nyuv2_recipe, write_layout

    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.workflows.train import fit

    H, W = MTAN_SIZE
    root = str(tmp_path / "nyu")
    write_layout(root, "nyuv2", n_train=2, n_val=2)
    for i in range(2):  # depth targets of 1e38: the L1 loss overflows to Inf
        np.save(os.path.join(root, "train", "depth", f"{i}.npy"),
                np.full((H, W, 1), 3e38, "float32"))
    recipe = tiny_nyuv2_recipe(root, ["semantic", "depth"], epochs=2)
    with pytest.raises(UserError) as caught:
        fit(recipe, str(tmp_path / "run"))
    message = str(caught.value)
    assert re.search(r"the loss term '(depth_\w+_loss|loss)' became NaN or Inf", message)
    assert "No epoch had finished, so there is no checkpoint" in message
    assert "never finite" in message and "data check" in message
    assert not (tmp_path / "run" / "checkpoints" / "state.json").exists()
    assert not (tmp_path / "run" / "model.keras").exists()


