"""``fit`` on several workers, run as the docs tell users: the same command on every worker.

Every job here runs real ``python -m keras_sdmtcnn.fit`` processes on
127.0.0.1 (``workers.py``). The runs are tiny and deterministic, so their
final weights can be compared exactly.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO
from workers import finish, fit_argv, free_ports, run_job, start, tf_config

RECIPE = """
data:
  format: scenes
  tasks: [semantic, depth]
  image_size: [32, 32]
  scenes: {{num_train: 16, num_val: 4, height: 32, width: 32, seed: 9, cache_dir: {cache}}}
model: {{width_multiplier: 0.0625, bottleneck_filters: 64, student_filters: [64, 64, 64, 64],
         synchronized_bn: false, encoder_depths: [1, 1, 1, 1], attention: false}}
training: {{epochs: 2, batch_size: 4, learning_rate: 0.003, deterministic: true,
           distribute: multi_worker, peer_timeout: 60}}
output: {{panels_every: 1}}
"""
# BatchNorm is not synchronised here: over gRPC on one CPU each synchronised
# layer's all-reduce costs milliseconds, which made these steps 8x slower
# (0.5 s against 0.06 s); the replicas' batches are the same either way, so
# the weights still equal one process's. test_distribute.py trains two
# workers with synchronised BatchNorm.

# Worker 1 of a job that SIGKILLs itself after its 6th train step (in epoch 2).
KILLED_WORKER = r"""
import os, signal, sys
from keras_sdmtcnn import cli, fit
from keras_sdmtcnn.training import callbacks
steps = [0]
original = callbacks.RunRecorder.on_train_batch_end
def on_train_batch_end(self, batch, logs=None):
    steps[0] += 1
    if steps[0] == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, batch, logs)
callbacks.RunRecorder.on_train_batch_end = on_train_batch_end
cli.run(fit.main_in_this_process, sys.argv[1:])
"""


def _weights(run_dir):
    from keras_sdmtcnn.training.saving import load_model

    return load_model(os.path.join(run_dir, "model.keras"), compile=False).get_weights()


def _quiet_env():
    # The commands' own filter decides what reaches stderr (no TF_CPP_MIN_LOG_LEVEL).
    return {"TF_CPP_MIN_LOG_LEVEL": ""}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Two trainings of one recipe, at once: two workers sharing one run directory, and one
    process with two CPU replicas."""
    from keras_sdmtcnn.data.scenes import ensure_scenes

    tmp = tmp_path_factory.mktemp("multi-worker")
    ensure_scenes(str(tmp / "cache"), 16, 4, 32, 32, 9, verbose=False)
    recipe = tmp / "job.yaml"
    recipe.write_text(RECIPE.format(cache=tmp / "cache"))
    shared, single = tmp / "shared", tmp / "single"
    one = subprocess.Popen(
        [sys.executable, "-m", "keras_sdmtcnn.fit", str(recipe), "--run-dir", str(single),
         "--set", "training.distribute=mirrored", "--set", "training.cpu_replicas=2"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    results = {"shared": run_job(fit_argv(recipe, shared), env=_quiet_env()),
               "single": finish([one])}
    return {"recipe": recipe, "tmp": tmp, "shared": shared, "single": single,
            "results": results}


def test_two_workers_sharing_a_run_directory_write_one_run(jobs):
    (code0, out0, err0), (code1, out1, err1) = jobs["results"]["shared"]
    assert (code0, code1) == (0, 0), err0[-2000:] + err1[-2000:]
    # A normal end is quiet on every worker: no runtime dump, no warning.
    assert err0 == "" and err1 == "", err0[-2000:] + err1[-2000:]
    assert "this worker writes nothing" in out1 and "replica(s)" in out0
    shared = jobs["shared"]
    assert json.loads((shared / "run.json").read_text())["status"] == "complete"
    # One complete run directory, and nothing of the other worker's in it.
    names = sorted(os.listdir(shared))
    assert names == [".lock", "checkpoints", "curves.png", "history.csv", "metrics.json",
                     "model.keras", "recipe.yaml", "run.json", "student.keras", "tensorboard"]
    assert sorted(os.listdir(shared / "checkpoints")) == [
        "best.keras", "epoch-0002.keras", "last.keras", "state.json"]
    assert "process" in (shared / ".lock").read_text()
    assert len(json.loads((shared / "metrics.json").read_text())) == 2
    # The same weights as one process with two replicas on the same global batches.
    code, _, err = jobs["results"]["single"][0]
    assert code == 0, err[-2000:]
    worst = max(float(np.abs(a - b).max())
                for a, b in zip(_weights(shared), _weights(jobs["single"])))
    assert worst <= 1e-6, worst


def test_a_worker_lost_mid_epoch_stops_the_other_and_the_job_resumes_exactly(jobs, tmp_path):
    # Each worker has a run directory of its own here: the chief's is the run,
    # the other's is never created, and on resuming the other worker takes
    # the chief's weights and optimizer state (it has no checkpoint to read).
    recipe = jobs["recipe"]

    def run_dir(index):
        return tmp_path / f"run-{index}"

    for _ in range(3):
        procs, _ = start(lambda i: (fit_argv(recipe, run_dir)(i) if i == 0 else
                                    [sys.executable, "-c", KILLED_WORKER, str(recipe),
                                     "--run-dir", str(run_dir(1))]))
        chief, killed = procs
        killed.wait(timeout=240)
        lost_at = time.monotonic()
        (code, _, err), (_, _, killed_err) = finish(procs)
        if "Could not start gRPC server" not in err + killed_err:
            break
    assert killed.returncode == -signal.SIGKILL
    # The chief stops within the heartbeat timeout (10 s) and the step it was in.
    assert time.monotonic() - lost_at < 40
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "worker 1 (127.0.0.1:" in errors[0], err[-2000:]
    assert "stopped answering" in errors[0] and "Traceback" not in err
    assert json.loads((run_dir(0) / "checkpoints" / "state.json").read_text())["epoch"] == 1
    # The same command again on every worker resumes from the chief's checkpoint.
    results = run_job(fit_argv(recipe, run_dir))
    assert [c for c, _, _ in results] == [0, 0], results[0][2][-2000:] + results[1][2][-2000:]
    assert "resuming after epoch 1" in results[0][1]
    assert "the chief, worker 0" in results[1][1] and "writes nothing" in results[1][1]
    assert json.loads((run_dir(0) / "run.json").read_text())["status"] == "complete"
    assert not run_dir(1).exists()  # nothing that could be taken for a run
    for a, b in zip(_weights(run_dir(0)), _weights(jobs["shared"])):
        np.testing.assert_array_equal(a, b)


def test_a_chief_that_cannot_start_stops_every_worker_with_its_reason(jobs):
    # The shared run is finished: the chief refuses, and tells the other worker why.
    results = run_job(fit_argv(jobs["recipe"], jobs["shared"]), env=_quiet_env(), timeout=120)
    assert [c for c, _, _ in results] == [2, 2]
    assert results[0][2].strip().splitlines() == [
        f"error: {jobs['shared']} already holds a finished run: choose another --run-dir, "
        "or pass --overwrite to replace it."]
    line = results[1][2].strip()
    assert line.startswith("error: The chief, worker 0 (127.0.0.1:") and "finished run" in line


def _lone_worker(recipe, run_dir, *extra):
    """Worker 1 of a two-worker cluster whose worker 0 never comes."""
    ports = free_ports(2)
    process = subprocess.Popen(
        fit_argv(recipe, run_dir, *extra)(1), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CONFIG": tf_config(ports, 1)})
    return process, ports


def test_sigterm_ends_a_worker_waiting_on_a_peer_within_seconds(jobs, tmp_path):
    process, _ = _lone_worker(jobs["recipe"], tmp_path / "run")
    time.sleep(6)  # well into its wait for worker 0
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == [
        "fit: stopped by SIGTERM. No epoch had finished, so there is no checkpoint to resume "
        "from."]


def test_a_peer_that_never_comes_and_a_wrong_cluster_each_get_one_line(jobs, tmp_path):
    recipe = jobs["recipe"]
    process, ports = _lone_worker(recipe, tmp_path / "run", "--set", "training.peer_timeout=2")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip().splitlines() == [
        f"error: worker 1 (127.0.0.1:{ports[1]}) waited 2 s for the other workers: no answer "
        f"from worker 0 (127.0.0.1:{ports[0]}). Start the same command on every worker of "
        "TF_CONFIG, check its addresses, or raise training.peer_timeout."]
    env = {**os.environ, "PYTHONPATH": REPO}
    outside = subprocess.run(
        fit_argv(recipe, tmp_path / "run")(0), cwd=REPO, capture_output=True, text=True,
        env={**env, "TF_CONFIG": tf_config(ports, 2)}, timeout=60)
    assert outside.returncode == 2
    assert outside.stderr.strip() == (
        "error: TF_CONFIG task.index 2 is outside the cluster: job worker has 2 task(s), "
        "indices 0 to 1.")
    # A batch that does not divide over every worker's replicas: refused before any wait.
    uneven = subprocess.run(
        fit_argv(recipe, tmp_path / "run", "--set", "training.batch_size=3")(0), cwd=REPO,
        capture_output=True, text=True, env={**env, "TF_CONFIG": tf_config(ports, 0)},
        timeout=60)
    assert uneven.returncode == 2
    assert uneven.stderr.strip() == (
        "error: training.batch_size 3 is the global batch and must divide evenly across the 2 "
        "replicas of 2 workers: choose a multiple of 2.")
