"""Shared fixtures: tiny models and tiny datasets, built once per session."""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Every test model is tiny: one thread per op, as fit chooses for small steps
# (speed.intra_op_threads), which also keeps the parallel test processes
# from spinning against each other on a small machine.
tf.config.threading.set_intra_op_parallelism_threads(1)

from keras_sdmtcnn.cli import collect_garbage_less_often  # noqa: E402
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN  # noqa: E402
from keras_sdmtcnn.training.trainer import MultiTaskTrainer  # noqa: E402

# As in the commands: the suite traces thousands of graphs.
collect_garbage_less_often()

TEST_EXTRA = 'pip install -e ".[test]"'


def pytest_addoption(parser, pluginmanager):
    # pyproject's addopts runs the suite in parallel (pytest-xdist, from the
    # test extra). Without it, these options are taken here so that the run
    # stops with one line naming the extra, not with a usage error.
    if not pluginmanager.hasplugin("xdist"):
        group = parser.getgroup("xdist")
        # A lowercase short option is reserved for plugins: _addoption is how
        # pytest-xdist itself registers -n.
        group._addoption("-n", dest="numprocesses_without_xdist")
        group.addoption("--maxprocesses", dest="maxprocesses_without_xdist")
        group.addoption("--dist", dest="dist_without_xdist")


# The default suite's slowest modules (tens of seconds each, measured with
# --durations), started first: pytest-xdist hands whole modules to its
# processes (--dist loadscope) in collection order, so a slow module
# collected last would run alone at the end while the other process idles.
SLOWEST_FIRST = (
    "workflows/test_multi_worker.py", "deploy/test_export.py", "training/test_resume.py",
    "workflows/test_experiments.py", "training/test_distribute.py", "workflows/test_bench.py",
    "workflows/test_commands.py", "deploy/test_preprocessing_parity.py",
    "models/test_sdmtcnn.py", "deploy/test_parity.py", "data/test_prepare.py",
    "workflows/test_notebook.py", "workflows/test_overwrite.py", "workflows/test_faults.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order


def pytest_configure(config):
    if hasattr(config.option, "numprocesses_without_xdist"):
        pytest.exit(f"error: the test suite needs the test extra (pytest-xdist and more): "
                    f"run {TEST_EXTRA} from the repository root.", returncode=4)

TASKS3 = ["semantic", "depth", "normal"]
ALL_TASKS = ["semantic", "depth", "normal", "keypoints", "edges"]
TINY = dict(
    width_multiplier=1 / 16, encoder_filters=(64, 128, 256, 512),
    bottleneck_filters=256, student_filters=(64, 32, 32, 16),
)


def tiny_network(tasks=TASKS3, image_size=(32, 32), num_classes=5, ignore_label=-1, seed=0,
                 **kwargs):
    keras.utils.set_random_seed(seed)
    return SDMTCNN(tasks, num_classes=num_classes, ignore_label=ignore_label,
                   image_size=image_size, **{**TINY, **kwargs})


def tiny_model(*args, **kwargs):
    """SD-MTCNN's trainer of a :func:`tiny_network` (compile it with an objective)."""
    return MultiTaskTrainer.for_network(tiny_network(*args, **kwargs))


def random_batch(tasks, batch=2, size=(32, 32), num_classes=5, ignore_label=-1, seed=0):
    """A random batch with some ignored labels, invalid depth and zero normals."""
    rng = np.random.default_rng(seed)
    h, w = size
    x = rng.uniform(0, 1, (batch, h, w, 3)).astype("float32")
    y = {}
    for task in tasks:
        if task == "semantic":
            label = rng.integers(0, num_classes, (batch, h, w))
            label[rng.uniform(size=label.shape) < 0.1] = ignore_label
            y[task] = label.astype("int32")
        elif task == "depth":
            d = rng.uniform(0.5, 5, (batch, h, w, 1))
            d[rng.uniform(size=d.shape) < 0.1] = 0
            y[task] = d.astype("float32")
        elif task == "normal":
            n = rng.normal(size=(batch, h, w, 3))
            n /= np.linalg.norm(n, axis=-1, keepdims=True)
            n[rng.uniform(size=(batch, h, w)) < 0.1] = 0
            y[task] = n.astype("float32")
        else:
            y[task] = rng.uniform(0, 1, (batch, h, w, 1)).astype("float32")
    return x, y


@pytest.fixture(scope="session")
def model3():
    """A tiny 3-task SegNet SD-MTCNN network at 32x32."""
    return tiny_network()


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory):
    """A tiny built-in scenes dataset in the Taskonomy layout."""
    from keras_sdmtcnn.data.scenes import ensure_scenes

    cache = tmp_path_factory.mktemp("scenes-cache")
    return ensure_scenes(str(cache), num_train=12, num_val=4, height=48, width=64,
                         seed=3, verbose=False)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(module, *args, cwd=REPO):
    """Runs ``python -m keras_sdmtcnn.<module> args`` as a user would."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", f"keras_sdmtcnn.{module}", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


TINY_RECIPE = """
data:
  format: scenes
  tasks: [semantic, depth, normal]
  image_size: [32, 32]
  val_split: splits/train.txt   # learn-ability check: evaluate on the training images
  scenes: {{num_train: 16, num_val: 2, height: 32, width: 32, seed: 5, cache_dir: {cache}}}
model:
  width_multiplier: 0.0625
  bottleneck_filters: 256
  student_filters: [256, 128, 128, 128]
objective: {{name: separate}}
training: {{epochs: 5, batch_size: 4, learning_rate: 0.005}}
"""


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, worker_id):
    """A tiny run trained through the real ``fit`` command, shared by the suite.

    Trained once for all the test processes (pytest-xdist workers share the
    parent of their temporary folders): the first process to need it trains
    it under a file lock, the others wait and read it. ``result`` holds the
    command's exit status and output.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    tmp = (base if worker_id == "master" else base.parent) / "finished-run"
    recipe, run_dir, output = tmp / "tiny.yaml", tmp / "run", tmp / "fit-output.json"
    with FileLock(str(tmp) + ".lock"):
        if not output.exists():
            tmp.mkdir(exist_ok=True)
            recipe.write_text(TINY_RECIPE.format(cache=tmp / "cache"))
            done = run_command("fit", str(recipe), "--run-dir", str(run_dir))
            output.write_text(json.dumps({"args": done.args, "returncode": done.returncode,
                                          "stdout": done.stdout, "stderr": done.stderr}))
        result = subprocess.CompletedProcess(**json.loads(output.read_text()))
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, run_dir, result


