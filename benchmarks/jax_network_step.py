"""Times the SD-MTCNN network's train step under Keras' JAX backend, in three precisions.

For machines without TensorFlow (a GPU machine with JAX): the networks are
backend-agnostic Keras, so their cost can be measured there. This is a plain
Keras step (``Model.train_on_batch``, compiled by XLA through JAX) with one
loss per output (cross-entropy for segmentation, L1 for depth and normals):
the network's cost, not the project's trainer, which is TensorFlow's.

Usage (figures in docs/benchmarks.md, "On a GPU")::

    KERAS_BACKEND=jax python benchmarks/jax_network_step.py 2x288x384 8x288x384

Prints one JSON line per (batch, size, policy): the first step (compilation
included) and the median steady step of ``STEPS`` (default 20).
"""

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sdmtcnn.models.sdmtcnn import SDMTCNN  # noqa: E402

TASKS = ["semantic", "depth", "normal"]
POLICIES = ["float32", "mixed_bfloat16", "mixed_float16"]


def batch_of(batch, h, w, num_classes=13):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, h, w, 3)).astype("float32")
    targets = {"semantic": rng.integers(0, num_classes, (batch, h, w)).astype("int32"),
               "depth": rng.uniform(0.5, 5, (batch, h, w, 1)).astype("float32"),
               "normal": rng.normal(size=(batch, h, w, 3)).astype("float32")}
    return x, {f"{t}_{b}": targets[t] for t in TASKS for b in ("teacher", "student")}


def time_step(policy, batch, h, w, steps):
    x, y = batch_of(batch, h, w)
    keras.config.set_dtype_policy(policy)  # mixed_float16: compile adds loss scaling
    try:
        keras.utils.set_random_seed(0)
        network = SDMTCNN(TASKS, num_classes=13, image_size=(h, w))
        network.compile(keras.optimizers.Adam(1e-4), loss={
            k: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if k.startswith("semantic") else keras.losses.MeanAbsoluteError() for k in y})
        start = time.perf_counter()
        network.train_on_batch(x, y)  # returns host values: the step has finished
        first = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            network.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy("float32")
    return {"batch": batch, "size": f"{h}x{w}", "policy": policy, "first_s": round(first, 2),
            "step_ms": round(1000 * float(np.median(times)), 2)}


def main(argv):
    sizes = [tuple(int(v) for v in s.split("x")) for s in (argv or ["2x288x384"])]
    steps = int(os.environ.get("STEPS", 20))
    for batch, h, w in sizes:
        for policy in POLICIES:
            print(json.dumps(time_step(policy, batch, h, w, steps)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
