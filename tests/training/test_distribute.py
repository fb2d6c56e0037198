"""Distribution strategies (resume: test_resume.py; precision: test_precision.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

STEP_SCRIPT = r"""
import json, sys
import numpy as np
from keras_sdmtcnn.training.distribute import split_cpu
split_cpu(2)
import keras, tensorflow as tf
sys.path.insert(0, "tests")
from conftest import TINY, random_batch
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN
from keras_sdmtcnn.training.trainer import MultiTaskTrainer
TASKS = ["semantic", "depth"]
from keras_sdmtcnn.training.objectives import get_objective
from keras_sdmtcnn.training.optimizers import FusedAdam
import keras_sdmtcnn.models.kernels
if sys.argv[2] == "fused":  # also every 3x3 conv's kernel gradient as matrix products
    keras_sdmtcnn.models.kernels.MATMUL_GRAD_MIN_CHANNEL_PRODUCT = 1

def build():
    keras.utils.set_random_seed(0)
    # A small graph (MirroredStrategy traces it once per replica): two tasks,
    # one conv per block, no attention; the objectives are what is under test.
    m = MultiTaskTrainer.for_network(SDMTCNN(
        TASKS, num_classes=5, image_size=(32, 32), synchronized_bn=True, attention=False,
        **{**TINY, "encoder_depths": (1, 1, 1, 1)}))
    optimizer = keras.optimizers.SGD(0.01) if sys.argv[2] == "sgd" else FusedAdam(1e-3)
    m.compile(optimizer, get_objective(sys.argv[1]))
    return m

x, y = random_batch(TASKS, batch=4, num_classes=5)
y["semantic"][:2, :20] = -1  # far more ignored pixels on the first replica's half
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
single = build()
initial = single.get_weights()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())
with strategy.scope():
    mirrored = build()
    mirrored.set_weights(initial)
single.fit(ds, epochs=1, verbose=0, shuffle=False)
mirrored.fit(ds, epochs=1, verbose=0, shuffle=False)
a, b = single.get_weights(), mirrored.get_weights()
def relative(u, v):
    return float(np.abs(u - v).max() / max(1.0, float(np.abs(v).max())))

print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "diff": max(relative(u, v) for u, v in zip(a, b)),
    "moved": max(relative(u, v) for u, v in zip(a, initial)),
}))
"""


def _python(code, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3",
                               **(env or {})})


# The second case (the ensemble objective, plain SGD) is opt-in: the first covers the strategy.
@pytest.mark.parametrize("objective,kernels", [
    ("separate", "fused"), pytest.param("ensemble", "sgd", marks=pytest.mark.slow)])
def test_mirrored_step_on_two_cpus_equals_the_single_device_step(objective, kernels):
    # "fused" (the default path): the fused Adam kernel updates each
    # replica's copy inside strategy.update(), and every 3x3 conv takes its
    # kernel gradient from matrix products, per replica. "sgd": a gradient
    # off by a uniform factor shows (Adam's first step would hide it); with
    # the ensemble objective, whose distillation target mixes the branches.
    # Both objectives and both optimizer paths, one pair each.
    result = _python(STEP_SCRIPT, objective, kernels)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["moved"] > 1e-3  # the step did change the weights
    # Adam divides by sqrt(v), which scales the float noise of near-zero
    # gradients up (Keras' own Adam differs by 2e-5 here too); an update
    # missing or applied twice on a replica would differ by the rate, 1e-3.
    assert report["diff"] < (1e-5 if kernels == "sgd" else 1e-4), report


WORKER_SCRIPT = r"""
import json, os, sys
import numpy as np
import keras, tensorflow as tf
sys.path.insert(0, "tests")
from conftest import TINY, random_batch
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN
from keras_sdmtcnn.training.objectives import SeparateObjective
from keras_sdmtcnn.training.trainer import MultiTaskTrainer

if os.environ.get("WORKER_FLOAT64") == "1":
    # Exact enough to compare with one process. In float32 this tiny model
    # (BatchNorm over 8 values a channel at its 2x2 bottleneck) turns rounding
    # differences of 1e-6 into 1e-3 after one SGD step and 0.04 after two,
    # whatever the batch is split into: even one device differs that much
    # between a batch and the same batch twice. In float64 replicas and one
    # device agree to 1e-10.
    keras.config.set_floatx("float64")
    from keras_sdmtcnn.process.settings import configure_kernels
    configure_kernels(fused_batchnorm=False, matmul_conv_grad=False)  # float32-only kernels
strategy = tf.distribute.MultiWorkerMirroredStrategy()
keras.utils.set_random_seed(0)
with strategy.scope():
    model = MultiTaskTrainer.for_network(
        SDMTCNN(["depth"], image_size=(32, 32), synchronized_bn=True, **TINY))
    model.compile(keras.optimizers.SGD(0.1), SeparateObjective())
x, y = random_batch(["depth"], batch=8)
batch, steps = (int(v) for v in sys.argv[2:4]) if len(sys.argv) > 2 else (4, 2)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
np.savez(sys.argv[1], *model.get_weights())
print("replicas", strategy.num_replicas_in_sync)
"""


def _two_workers(tmp_path, **env_extra):
    from workers import run_job

    results = run_job(lambda index: [sys.executable, "-c", WORKER_SCRIPT,
                                     str(tmp_path / f"w{index}.npz")], env=env_extra,
                      timeout=120)
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert "replicas 2" in out
    return np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")


# Opt-in: tests/workflows/test_multi_worker.py checks the same through the fit command
# (float32, within 1e-6 of one process); this one holds the float64 step to 1e-9.
@pytest.mark.slow
def test_two_workers_agree_with_each_other_and_with_one_process(tmp_path):
    # Two workers on localhost, each taking half of every global batch of 4,
    # must end bitwise equal (the all-reduce guarantees that much) and equal
    # to one process taking the same global batches. In float64 (see
    # WORKER_SCRIPT): a real fault (a missing all-reduce, a gradient off by
    # the number of workers, a BatchNorm not synchronised) moves the weights
    # by 1e-3 or more.
    a, b = _two_workers(tmp_path, WORKER_FLOAT64="1")
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    single = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(tmp_path / "one.npz")],
                            cwd=REPO, env={**env, "WORKER_FLOAT64": "1", "PYTHONPATH": REPO,
                                           "TF_CPP_MIN_LOG_LEVEL": "3"},
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "replicas 1" in single.stdout
    one = np.load(tmp_path / "one.npz")
    assert a["arr_0"].dtype == np.float64
    worst = max(float(np.abs(a[key] - one[key]).max()) for key in a.files)
    assert worst < 1e-9, worst


def test_batchnorm_is_synchronised_by_default_with_several_replicas():
    from keras_sdmtcnn.config import recipe_from_dict
    from keras_sdmtcnn.training.builders import build_model, network_config

    recipe = recipe_from_dict({
        "data": {"tasks": ["depth"], "image_size": [32, 32]},
        "model": {"width_multiplier": 0.0625, "bottleneck_filters": 64,
                  "encoder_depths": [1, 1, 1, 1]}})
    assert network_config(recipe, 7, 0, replicas=1)["model"]["synchronized_bn"] is False
    assert network_config(recipe, 7, 0, replicas=2)["model"]["synchronized_bn"] is True
    model = build_model(recipe, 7, 0, replicas=2)
    norms = [layer for layer in model.layers
             if "bn" in layer.name and hasattr(layer, "synchronized")]
    assert norms and all(layer.synchronized for layer in norms)
    # An explicit recipe value wins.
    recipe.model.synchronized_bn = False
    assert network_config(recipe, 7, 0, replicas=2)["model"]["synchronized_bn"] is False
