"""The networks are backend-agnostic Keras: the demo-size SD-MTCNN runs under JAX (and
PyTorch where installed) with TensorFlow's weights, to float32 rounding.

The network is built and run here under TensorFlow; a subprocess with
``KERAS_BACKEND`` set builds it again from its config, loads the weights,
and compares its outputs and one gradient. Importing the networks there
loads no TensorFlow.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from keras_sdmtcnn.models.sdmtcnn import SDMTCNN

# The demo recipe's network (recipes/synthetic.yaml): five tasks at 48x64, width 1/8.
DEMO = dict(tasks=["semantic", "depth", "normal", "keypoints", "edges"], num_classes=7,
            ignore_label=0, image_size=(48, 64), width_multiplier=0.125)
KERNEL = "encoder1_conv1_conv"  # the gradient compared: of the first convolution's kernel

OTHER_BACKEND = r"""
import json, sys
import numpy as np
import keras
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN
folder, backend = sys.argv[1], keras.backend.backend()
assert "tensorflow" not in sys.modules, "the networks imported TensorFlow"
# The weights come from TensorFlow: initialising them is wasted work, which
# under JAX compiles one XLA program per kernel shape (12 of 15 s here).
keras.initializers.HeNormal.__call__ = lambda self, shape, dtype=None: keras.ops.zeros(
    shape, dtype)
with open(f"{folder}/config.json") as f:
    network = SDMTCNN.from_config(json.load(f))
network.load_weights(f"{folder}/network.weights.h5")
reference = np.load(f"{folder}/reference.npz")
x = reference["x"]
kernel = network.get_layer("%s").kernel
if backend == "jax":
    import jax
    import jax.numpy as jnp
    trainable = [v.value for v in network.trainable_variables]
    rest = [v.value for v in network.non_trainable_variables]
    index = [v.path for v in network.trainable_variables].index(kernel.path)
    forward = jax.jit(lambda values, x: network.stateless_call(values, rest, x,
                                                               training=False)[0])
    out = {k: np.asarray(v) for k, v in forward(trainable, x).items()}

    def objective(values):
        outputs = forward(values, x)
        return jnp.sum(outputs["depth_student"]) + jnp.sum(outputs["normal_teacher"])

    grad = np.asarray(jax.jit(jax.grad(objective))(trainable)[index])
else:
    out = {k: keras.ops.convert_to_numpy(v) for k, v in network(x, training=False).items()}
    import torch
    outputs = network(torch.as_tensor(x), training=False)
    total = outputs["depth_student"].sum() + outputs["normal_teacher"].sum()
    total.backward()
    grad = kernel.value.grad.detach().cpu().numpy()
worst = {k: float(np.abs(out[k] - reference[k]).max() / max(1.0, np.abs(reference[k]).max()))
         for k in out}
worst["gradient"] = float(np.abs(grad - reference["gradient"]).max()
                          / max(1e-6, np.abs(reference["gradient"]).max()))
print(json.dumps(worst))
""" % KERNEL


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The demo network under TensorFlow: its weights, a batch, its outputs and a gradient."""
    folder = tmp_path_factory.mktemp("backends")
    network = SDMTCNN(**DEMO)
    x = np.random.default_rng(0).uniform(0, 1, (2, 48, 64, 3)).astype("float32")
    kernel = network.get_layer(KERNEL).kernel
    with tf.GradientTape() as tape:
        out = network(x, training=False)
        total = tf.reduce_sum(out["depth_student"]) + tf.reduce_sum(out["normal_teacher"])
    gradient = tape.gradient(total, kernel.value)
    network.save_weights(str(folder / "network.weights.h5"))
    (folder / "config.json").write_text(json.dumps(network.get_config()))
    np.savez(folder / "reference.npz", x=x, gradient=gradient.numpy(),
             **{k: v.numpy() for k, v in out.items()})
    return folder


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_demo_network_runs_under_another_backend_with_tensorflows_weights(reference,
                                                                              backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (jax comes with the test extra)")
    done = subprocess.run([sys.executable, "-c", OTHER_BACKEND, str(reference)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": backend})
    assert done.returncode == 0, done.stderr[-3000:]
    worst = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(worst) == len(DEMO["tasks"]) * 2 + 1
    # float32 rounding of another library's kernels, relative to each output's scale
    # (1e-6 to 2e-5 seen); the gradient sums over every pixel through the whole
    # network, in an order that varies with the threads (2e-6 to 4e-3 seen).
    gradient = worst.pop("gradient")
    assert max(worst.values()) < 1e-3 and gradient < 1e-2, (worst, gradient)
