"""RunDir: one process per run directory; what a killed process left is cleaned up."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir


def test_a_second_process_is_refused_while_the_first_holds_the_run(tmp_path):
    run = RunDir(tmp_path / "run")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("training: {epochs: 1}\n")
    with run.lock():
        with pytest.raises(UserError, match=f"being written by process {os.getpid()}"):
            with RunDir(run.path).lock():
                pass
        done = subprocess.run(
            [sys.executable, "-m", "keras_sdmtcnn.fit", str(recipe), "--run-dir", run.path],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: {run.path} is being written by process {os.getpid()} on "
                     f"{socket.gethostname()}: wait for it to finish, stop it, or choose "
                     "another --run-dir."]
    # Released with the process that held it: a later holder gets it.
    with RunDir(run.path).lock():
        pass


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run = RunDir(tmp_path / "run")
    hold = ("import os, sys, time; from keras_sdmtcnn.runs.rundir import RunDir\n"
            f"with RunDir({run.path!r}).lock():\n"
            "    print('held', flush=True); os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", hold], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == -9 and "held" in done.stdout
    with run.lock():
        pass


def test_temporary_files_of_a_killed_process_are_removed(tmp_path):
    run = RunDir(tmp_path / "run")
    os.makedirs(run.checkpoints)
    left = [os.path.join(run.path, ".metrics.json.k2j3.tmp"),
            os.path.join(run.checkpoints, ".epoch-0002.keras.x8.tmp.keras")]
    kept = [os.path.join(run.path, "metrics.json"), os.path.join(run.checkpoints, "state.json")]
    for path in left + kept:
        with open(path, "w") as f:
            f.write("{}")
    run.remove_temporaries()
    assert [os.path.exists(p) for p in left] == [False, False]
    assert all(os.path.exists(p) for p in kept)


def test_the_temporary_file_of_a_live_process_is_left_alone(tmp_path):
    # Another command (evaluate writing evaluation.json into the run) is
    # writing while fit starts on the same run directory: its temporary file
    # must survive fit's cleanup. Only what a process now gone left is removed.
    from keras_sdmtcnn.io import atomic_path

    run = RunDir(tmp_path / "run")
    os.makedirs(run.path)
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from keras_sdmtcnn.io import atomic_path\n"
         f"with atomic_path({run.file('evaluation.json')!r}) as tmp:\n"
         "    open(tmp, 'w').write('{}'); print(tmp, flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        live = writer.stdout.readline().strip()
        with atomic_path(run.file("metrics.json")) as mine:  # this process's own, in flight
            run.remove_temporaries()
            assert os.path.exists(live) and os.path.exists(mine)
    finally:
        writer.kill()
        writer.wait()
    run.remove_temporaries()  # its writer is gone now
    assert not os.path.exists(live)


def test_a_run_whose_process_is_gone_is_reported_as_ended_without_finishing(tmp_path):
    run = RunDir(tmp_path / "run")
    hold = ("import os; from keras_sdmtcnn.runs.rundir import RunDir\n"
            f"run = RunDir({run.path!r})\n"
            "with run.lock():\n"
            "    run.write_status('running'); os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", hold], timeout=60,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == -signal.SIGKILL
    assert json.loads(open(run.file("run.json")).read())["status"] == "running"
    assert run.state_of_run() == "ended without finishing"
    with run.lock():  # held by this process: running
        assert run.state_of_run() == "running"


@pytest.mark.parametrize("name,advice", [
    ("run.json", "rerun fit on the run directory"),
    ("checkpoints/state.json", "remove checkpoints/ to start the run afresh"),
    ("metrics.json", "rerun fit --overwrite"),
    ("recipe.yaml", "restore it, or rerun fit --overwrite"),
])
def test_run_files_cut_short_are_one_error_naming_the_file(finished_run, tmp_path, name,
                                                           advice):
    import shutil

    from conftest import run_command

    recipe, finished, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(".lock", "evaluation.*"))
    status = json.loads((run / "run.json").read_text())
    status["status"] = "running"  # an unfinished run, so fit reads everything to resume
    (run / "run.json").write_text(json.dumps(status))
    text = (run / name).read_text()
    (run / name).write_text(text[:len(text) // 2] + ("\x00{[" if name == "recipe.yaml" else ""))
    result = run_command("fit", str(recipe), "--run-dir", str(run))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {run / name} is not valid "), line
    assert advice in line, line
