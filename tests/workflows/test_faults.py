"""Faults and refusals around a run directory: a full disk, a read-only folder, a finished run.

Each needs a small file system of its own (a tmpfs, which needs root); where
one cannot be mounted the test is skipped and says why.
"""

import json
import os
import shutil
import subprocess

import pytest
from conftest import run_command

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
