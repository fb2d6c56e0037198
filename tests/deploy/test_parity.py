"""The float32 parity rule of exports (``deploy/parity.py``) on models of several sizes.

A correct conversion passes at widths 1/16 and 1/8 after 8 and 25 steps (the
fault test's model, 1/16 after 25 steps, too), an early model's near-zero
normals included; a planted fault (the model
changed after conversion, as a wrong conversion would change it) fails,
naming the output.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import TASKS3, random_batch, tiny_model

from keras_sdmtcnn.deploy.parity import failures, parity, sensitivity
from keras_sdmtcnn.deploy.runtime import ExportedModel
from keras_sdmtcnn.deploy.serving import serving_function, write_saved_model
from keras_sdmtcnn.deploy.tflite import convert_saved_model
from keras_sdmtcnn.training.objectives import SeparateObjective
from keras_sdmtcnn.training.optimizers import FusedAdam


class _TFLite(ExportedModel):
    """The interpreter of a converted flatbuffer, without an export folder around it."""

    def __init__(self, flat, names):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=flat)
        self._runner = interpreter.get_signature_runner()
        self._keep, self.names = interpreter, names

    def __call__(self, image):
        out = self._runner(image=image)
        return {name: np.asarray(out[name]) for name in self.names}


def _converted(model, branch, tmp_path):
    serve, spec, tasks = serving_function(model, branch, (32, 32))
    serve = tf.function(serve, input_signature=[spec])
    folder = str(tmp_path / f"{branch}-saved")
    write_saved_model(model, serve, folder)
    names = list(serve(np.zeros((1, 32, 32, 3), np.uint8)))
    floats, float_spec, _ = serving_function(model, branch, (32, 32), "float32")
    nudged = tf.function(floats, input_signature=[float_spec])
    return _TFLite(convert_saved_model(folder), names), serve, tasks, nudged


def _images(n=4):
    return list(np.random.default_rng(1).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8))


def _trained(width, steps):
    model = tiny_model(width_multiplier=width)
    model.compile(FusedAdam(3e-3), SeparateObjective())
    x, y = random_batch(TASKS3, batch=4)
    for _ in range(steps):
        model.train_on_batch(x, y)
    return model


# (The Teacher's conversion is checked by every export test: tests/deploy/test_export.py.)
# The wider, longer-trained case is opt-in (-m slow): the first covers the rule.
@pytest.mark.parametrize("width,steps,branch", [
    (1 / 16, 8, "student"), pytest.param(1 / 8, 25, "student", marks=pytest.mark.slow)])
def test_a_correct_float32_conversion_passes_at_every_size(width, steps, branch, tmp_path):
    model = _trained(width, steps)
    runtime, serve, tasks, nudged = _converted(model, branch, tmp_path)
    report = parity(runtime, serve, _images(), tasks, sensitivity(nudged, _images()))
    assert failures(report) == [], report
    assert set(report["max_abs_diff"]) == {"semantic_logits", "depth", "normal"}


def test_a_conversion_that_changed_the_model_fails_naming_the_output(tmp_path):
    model = _trained(1 / 16, 25)
    runtime, serve, tasks, nudged = _converted(model, "student", tmp_path)
    assert failures(parity(runtime, serve, _images(), tasks, sensitivity(nudged, _images()))) == []
    # The Keras model now differs from what was converted, as after a wrong
    # conversion: the depth head's last kernel 1% off, then one BatchNorm's
    # variance 2% off (its epsilon wrong by that much).
    layer = model.get_layer("depth_student")
    kernel = layer.kernel.numpy()
    layer.kernel.assign(kernel * 1.01)
    found = failures(parity(runtime, serve, _images(), tasks, sensitivity(nudged, _images())))
    assert len(found) == 1 and found[0].startswith("depth: 99.9% of values within"), found
    layer.kernel.assign(kernel)
    norm = model.get_layer("encoder2_conv1_bn")
    norm.moving_variance.assign(norm.moving_variance.numpy() * 1.02)
    found = failures(parity(runtime, serve, _images(), tasks, sensitivity(nudged, _images())))
    assert {f.split(":")[0] for f in found} >= {"depth", "normal"}, found
    assert os.path.isdir(tmp_path / "student-saved")
