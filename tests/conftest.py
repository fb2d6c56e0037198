"""Shared fixtures: tiny models and tiny datasets, built once per session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_sdmtcnn.model import SDMTCNN  # noqa: E402

TASKS3 = ["semantic", "depth", "normal"]
ALL_TASKS = ["semantic", "depth", "normal", "keypoints", "edges"]
TINY = dict(
    width_multiplier=1 / 16, encoder_filters=(64, 128, 256, 512),
    bottleneck_filters=256, student_filters=(64, 32, 32, 16),
)


def tiny_model(tasks=TASKS3, image_size=(32, 32), num_classes=5, ignore_label=-1, seed=0,
               **kwargs):
    keras.utils.set_random_seed(seed)
    return SDMTCNN(tasks, num_classes=num_classes, ignore_label=ignore_label,
                   image_size=image_size, **{**TINY, **kwargs})


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
    """A tiny 3-task SegNet SD-MTCNN at 32x32 (not compiled)."""
    return tiny_model()


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory):
    """A tiny built-in scenes dataset in the Taskonomy layout."""
    from keras_sdmtcnn.data.scenes import ensure_scenes

    cache = tmp_path_factory.mktemp("scenes-cache")
    return ensure_scenes(str(cache), num_train=12, num_val=4, height=48, width=64,
                         seed=3, verbose=False)
