"""Faults and refusals around a run directory: a full disk, a read-only folder, a finished run.

Each needs a small file system of its own (a tmpfs, which needs root); where
one cannot be mounted the test is skipped and says why.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, run_command

from keras_sdmtcnn.runs.rundir import RunDir


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()

    def make(size_kb):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                               str(mount)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): "
                        "the disk-full and read-only cases need one")
        return mount

    yield make
    subprocess.run(["umount", str(mount)], capture_output=True)


def _unfinished_copy(finished, target):
    """The finished run as if killed after epoch 4 of 5: its records and one checkpoint."""
    source, run = RunDir(finished), RunDir(target)
    os.makedirs(run.checkpoints)
    for name in (RunDir.RECIPE, RunDir.HISTORY_CSV):
        if os.path.exists(source.file(name)):
            shutil.copy(source.file(name), run.file(name))
    state = source.read_state()
    checkpoint = os.path.join(run.checkpoints, "epoch-0004.keras")
    shutil.copy(state["path"], checkpoint)
    for name in (RunDir.LAST, RunDir.BEST):
        os.link(checkpoint, os.path.join(run.checkpoints, name))
    json.dump({"epoch": 4, "best": state["best"], "checkpoint": "epoch-0004.keras"},
              open(os.path.join(run.checkpoints, RunDir.STATE), "w"))
    history = json.load(open(source.file(RunDir.HISTORY)))
    json.dump(history[:4], open(run.file(RunDir.HISTORY), "w"))
    run.write_status("running")
    return run


def _staged_on_tmpfs(finished, tmp_path, small_tmpfs, room_kb):
    """The unfinished copy on a tmpfs with ``room_kb`` free beyond what it holds."""
    staged = _unfinished_copy(finished, tmp_path / "staged")
    mount = small_tmpfs(_used_kb(staged.path) + room_kb)
    subprocess.run(["cp", "-a", staged.path, str(mount / "run")], check=True)
    return RunDir(mount / "run")


def _used_kb(folder):
    """Kilobytes the files take, each hard-linked file once (last.keras, best.keras)."""
    sizes = {}
    for d, _, files in os.walk(folder):
        for f in files:
            stat = os.stat(os.path.join(d, f))
            sizes[stat.st_ino] = stat.st_size
    return sum(sizes.values()) // 1024


def _one_error(result):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_full_disk_stops_with_one_line_and_the_last_checkpoint_intact(finished_run, tmp_path,
                                                                         small_tmpfs):
    recipe, finished, _ = finished_run
    checkpoint_kb = os.path.getsize(RunDir(finished).read_state()["path"]) // 1024
    # Room for the small records, not for a new checkpoint.
    run = _staged_on_tmpfs(finished, tmp_path, small_tmpfs, 64 + checkpoint_kb // 2)
    before = open(os.path.join(run.checkpoints, "epoch-0004.keras"), "rb").read()
    line = _one_error(run_command("fit", str(recipe), "--run-dir", run.path))
    assert "No space left on device" in line and "resumes from its last checkpoint" in line
    assert open(os.path.join(run.checkpoints, "epoch-0004.keras"), "rb").read() == before
    assert run.read_state()["epoch"] == 4
    assert not [n for _, _, files in os.walk(run.path) for n in files if ".tmp" in n]
    assert not os.path.exists(run.model_path)


def test_a_read_only_folder_stops_with_one_line_and_changes_nothing(finished_run, tmp_path,
                                                                     small_tmpfs):
    recipe, finished, _ = finished_run
    run = _staged_on_tmpfs(finished, tmp_path, small_tmpfs, 256)
    mount = os.path.dirname(run.path)
    before = {n: open(os.path.join(run.checkpoints, n), "rb").read()
              for n in os.listdir(run.checkpoints)}
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    line = _one_error(run_command("fit", str(recipe), "--run-dir", run.path))
    assert "Read-only file system" in line and run.path in line
    assert {n: open(os.path.join(run.checkpoints, n), "rb").read()
            for n in os.listdir(run.checkpoints)} == before


def test_a_finished_run_is_not_overwritten_without_overwrite(finished_run):
    recipe, run_dir, _ = finished_run
    model = os.path.join(run_dir, RunDir.MODEL)
    before = (os.stat(model).st_mtime_ns, open(model, "rb").read())
    line = _one_error(run_command("fit", str(recipe), "--run-dir", str(run_dir)))
    assert line == (f"error: {run_dir} already holds a finished run: choose another --run-dir, "
                    "or pass --overwrite to replace it.")
    assert (os.stat(model).st_mtime_ns, open(model, "rb").read()) == before
    assert RunDir(run_dir).is_complete()


# fit's training, killed by an out-of-memory error from TensorFlow at its 3rd step.
OUT_OF_MEMORY = r"""
import sys
from keras_sdmtcnn import cli, fit
from keras_sdmtcnn.training import callbacks
steps = [0]
def on_train_batch_end(self, batch, logs=None):
    import tensorflow as tf  # after the command's quiet start, as in fit
    steps[0] += 1
    if steps[0] == 3:
        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[8,64,48,64] and type float")
callbacks.RunRecorder.on_train_batch_end = on_train_batch_end
cli.run(fit.main_in_this_process, sys.argv[1:])
"""


def test_running_out_of_memory_is_reported_as_memory(finished_run, tmp_path):
    recipe, _, _ = finished_run
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, str(recipe), "--run-dir",
                             str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    # (This script imports Keras before the command's quiet start: its start-up lines show.)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr[-3000:]
    line = errors[0]
    assert line.startswith("error: Out of memory on the CPU while training tiny with "
                           "training.batch_size 4 at data.image_size 32 x 32"), line
    assert "OOM when allocating" in line and "smaller training.batch_size" in line
    assert "corrupt" not in line and "dataset" not in line
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_a_fit_that_cannot_have_the_memory_it_needs_says_so(finished_run, tmp_path):
    # Under an address-space limit too low for TensorFlow, the command ends
    # with exit 2 and one line: about memory where Python sees the failure,
    # naming the crash where the runtime dies in native code. Never silent,
    # and the run is not left marked as running.
    import resource

    recipe, _, _ = finished_run
    run_dir = tmp_path / "run"
    for limit_gb in (1.0, 1.5):
        def limited(limit=int(limit_gb * 2**30)):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        result = subprocess.run(
            [sys.executable, "-m", "keras_sdmtcnn.fit", str(recipe), "--run-dir", str(run_dir)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
            timeout=300, preexec_fn=limited)
        assert result.returncode == 2, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert ("Out of memory" in errors[0] or "crashed inside TensorFlow's runtime" in errors[0]
                or "killed (SIGKILL)" in errors[0]), errors[0]
        assert f"may use {limit_gb:.1f} GB (its address-space limit" in errors[0]
        if (run_dir / "run.json").exists():
            assert json.loads((run_dir / "run.json").read_text())["status"] != "running"
