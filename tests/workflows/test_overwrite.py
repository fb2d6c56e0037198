"""``fit --overwrite``: the old run stays whole until the new one is complete.

A copy of the suite's finished run is overwritten and the process is killed
at several moments; each time the run directory holds the old run or the
new one, whole, never neither or a mix.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import REPO

from keras_sdmtcnn.runs.rundir import RunDir

# fit --overwrite in this process, SIGKILLed at one moment (argv[1]).
KILLED = r"""
import os, signal, sys
from keras_sdmtcnn import cli, fit, io
from keras_sdmtcnn.runs import rundir
moment = sys.argv[1]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if moment == "final_model":
    original_save = rundir.atomic_save_model
    def save(model, path):
        if os.path.basename(path) == "model.keras":
            with io.atomic_path(path, suffix=".keras") as tmp:
                model.save(tmp)
                die()
        return original_save(model, path)
    rundir.atomic_save_model = save
elif moment == "between_renames":  # a file system without an atomic exchange
    rundir._exchange = lambda a, b: False
    original_replace = os.replace
    def replace(a, b):  # the new run about to take the old one's name, the old one parked
        if ".overwrite." in os.path.basename(str(a)) and not os.path.exists(b):
            die()
        return original_replace(a, b)
    os.replace = replace
cli.run(fit.main_in_this_process, sys.argv[2:])
"""


def _snapshot(run_dir):
    """What makes a run: its status, its epochs and its final model's bytes."""
    status = json.loads((run_dir / "run.json").read_text())
    return (status["status"], status.get("started"),
            len(json.loads((run_dir / "metrics.json").read_text())),
            (run_dir / "model.keras").read_bytes())


@pytest.fixture
def old_run(finished_run, tmp_path):
    recipe, run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock", "evaluation.*"))
    return recipe, copy, _snapshot(copy)


def _fit(*args, script=None, moment=None):
    argv = ([sys.executable, "-c", script, moment] if script else
            [sys.executable, "-m", "keras_sdmtcnn.fit"])
    return subprocess.run([*argv, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": REPO,
                                            "TF_CPP_MIN_LOG_LEVEL": "3"})


# The second moment (a file system without an atomic exchange, where the
# old run is parked for a moment) is opt-in: -m slow.
@pytest.mark.parametrize("moments", [
    ("final_model",), pytest.param(("final_model", "between_renames"), marks=pytest.mark.slow)])
def test_a_killed_overwrite_leaves_the_old_run_or_the_new_one_whole(old_run, moments):
    recipe, run_dir, before = old_run
    args = (recipe, "--run-dir", run_dir, "--overwrite", "--set", "training.epochs=1", "--set",
            "model.encoder_depths=[1, 1, 1, 1]", "--set", "model.attention=false")
    # Killed while writing the new run's final model, and (on a file system
    # without an atomic exchange) between parking the old run and renaming the new.
    for moment in moments:
        killed = _fit(*args, script=KILLED, moment=moment)
        assert killed.returncode == -signal.SIGKILL, (moment, killed.stderr[-2000:])
        # The old run, whole (parked between the two renames, it is back as
        # soon as anything opens the run directory).
        assert _snapshot(RunDir(run_dir).path and run_dir) == before, moment
        hidden = [n for n in os.listdir(run_dir.parent) if n.startswith(".run.")]
        assert hidden, "the unfinished new run stays beside it, hidden"
    # The next fit removes what the killed ones left; the old run is still
    # refused without --overwrite, and replaced with it.
    refused = _fit(recipe, "--run-dir", run_dir)
    assert refused.returncode == 2 and "already holds a finished run" in refused.stderr
    assert not [n for n in os.listdir(run_dir.parent) if n.startswith(".run.")]
    done = _fit(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    status, started, epochs, model = _snapshot(run_dir)
    assert (status, epochs) == ("complete", 1) and started != before[1] and model != before[3]
    assert sorted(os.listdir(run_dir.parent)) == ["run"]


def test_an_overwrite_whose_data_is_gone_leaves_the_old_run(old_run):
    recipe, run_dir, before = old_run
    result = _fit(recipe, "--run-dir", run_dir, "--overwrite", "--set",
                  "data.format=nyuv2", "--set", "data.root=/nonexistent/nyuv2", "--set",
                  "data.tasks=[semantic]")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert _snapshot(run_dir) == before
    assert sorted(os.listdir(run_dir.parent)) == ["run"]
